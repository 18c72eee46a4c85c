"""Prediction and evaluation of a trained run (``workbench predict`` / ``workbench evaluate --run``)."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.atomic import write_text_atomic
from workbench.engine.inference import evaluate_predictions, predict_dataset, predictions_to_coco_results
from workbench.engine.run_dir import RunDir
from workbench.engine.trainer import load_trained_model, resolve_device


def _open(run_dir: Path, which: str, data: str | None, split: str | None, device: str):
    from workbench.data.sources import open_dataset

    dev = resolve_device(device)
    model, cfg, state = load_trained_model(run_dir, which, dev)
    split = split or cfg.data.val_split
    dataset = open_dataset(data or cfg.data.spec, split)
    return model, cfg, dataset, split, dev


def predict_run(run_dir: Path, out: Path | None = None, *, which: str = "best", data: str | None = None,
                split: str | None = None, device: str = "auto", progress: bool = True, trace: bool = False) -> Path:
    """Write the COCO results of the run's checkpoint on ``split`` (default: its val split).

    With ``trace`` the detector also records its trace per image, saved to ``RUN/traces/<split>``
    (:func:`workbench.inspection.load_traces` reads it); the detections are the same.
    """
    run_dir = Path(run_dir)
    model, cfg, dataset, split, dev = _open(run_dir, which, data, split, device)
    if trace:
        from workbench.inspection.collect import dataset_meta, predict_with_traces
        from workbench.inspection.traces import trace_dir

        meta = dataset_meta(dataset, data or cfg.data.spec, which)
        preds = predict_with_traces(model, dataset, dev, trace_dir(run_dir, split), method=cfg.method, split=split,
                                    meta=meta, batch_size=cfg.batch_size, progress=progress)
    else:
        preds = predict_dataset(model, dataset, dev, batch_size=cfg.batch_size, progress=progress)
    results = predictions_to_coco_results(preds, dataset.label_to_category_id)
    return write_text_atomic(out or RunDir(run_dir).predictions / f"{split}.json", json.dumps(results))


def evaluate_run(run_dir: Path, *, which: str = "best", data: str | None = None, split: str | None = None,
                 device: str = "auto", progress: bool = True) -> dict[str, float]:
    """COCO metrics of the run's checkpoint on ``split``; also written to RUN/eval/<which>_<split>.json."""
    model, cfg, dataset, split, dev = _open(run_dir, which, data, split, device)
    preds = predict_dataset(model, dataset, dev, batch_size=cfg.batch_size, progress=progress)
    metrics = evaluate_predictions(dataset, preds)
    out = RunDir(run_dir).root / "eval" / f"{Path(which).stem}_{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
