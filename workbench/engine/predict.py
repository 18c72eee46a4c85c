"""Prediction and evaluation of a trained run (``workbench predict`` / ``workbench evaluate --run``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.atomic import write_text_atomic
from workbench.engine.inference import evaluate_predictions, predict_dataset, predictions_to_coco_results
from workbench.engine.loading import open_trained_run
from workbench.engine.run_dir import RunDir
from workbench.engine.timing import InferenceTimer


def predict_run(run_dir: Path, out: Path | None = None, *, which: str = "best", data: str | None = None,
                split: str | None = None, device: str = "auto", progress: bool | str = True, trace: bool = False) -> Path:
    """Write the COCO results of the run's checkpoint on ``split`` (default: its val split).

    With ``trace`` the detector also records its trace per image, saved to ``RUN/traces/<split>``
    (:func:`workbench.inspection.load_traces` reads it); the detections are the same.
    ``progress``: see :func:`workbench.engine.inference.iter_model_outputs`.
    """
    run_dir = Path(run_dir)
    run = open_trained_run(run_dir, which, data=data, split=split, device=device)
    if trace:
        from workbench.inspection.collect import dataset_meta, predict_with_traces
        from workbench.inspection.traces import trace_dir

        meta = dataset_meta(run.dataset, run.data_spec, which)
        preds = predict_with_traces(run.model, run.dataset, run.device, trace_dir(run_dir, run.split),
                                    method=run.cfg.method, split=run.split, meta=meta,
                                    batch_size=run.cfg.batch_size, progress=progress)
    else:
        preds = predict_dataset(run.model, run.dataset, run.device, batch_size=run.cfg.batch_size, progress=progress)
    results = predictions_to_coco_results(preds, run.dataset.label_to_category_id)
    return write_text_atomic(out or RunDir(run_dir).predictions / f"{run.split}.json", json.dumps(results))


def eval_result_path(run_dir: Path | str, which: str, split: str) -> Path:
    """``RUN/eval/<which>_<split>.json``: where the evaluation of a checkpoint on a split goes."""
    return RunDir(Path(run_dir)).root / "eval" / f"{Path(which).stem}_{split}.json"


def evaluate_run(run_dir: Path, *, which: str = "best", data: str | None = None, split: str | None = None,
                 device: str = "auto", progress: bool | str = True, metric: str | None = None) -> dict[str, Any]:
    """The metrics of the run's checkpoint on ``split``: the COCO numbers, AP at IoU 0.5 .. 0.9
    and, with ``metric="voc07"``, VOC07 11-point and all-point mAP (``metric`` defaults to the
    one the run is judged by, ``TrainConfig.metric``). Also written to
    ``RUN/eval/<which>_<split>.json``, with the forward time per image of the pass, its device and
    threads (:mod:`workbench.engine.timing`)."""
    from workbench.evaluation.detection import check_metric

    run = open_trained_run(run_dir, which, data=data, split=split, device=device)
    metric = check_metric(metric or run.cfg.metric)
    timer = InferenceTimer(run.device, batch_size=run.cfg.batch_size)
    preds = predict_dataset(run.model, run.dataset, run.device, batch_size=run.cfg.batch_size, progress=progress,
                            timer=timer)
    metrics = {**evaluate_predictions(run.dataset, preds, metric=metric), **timer.record()}
    write_text_atomic(eval_result_path(run_dir, which, run.split), json.dumps(metrics, indent=2) + "\n")
    return metrics
