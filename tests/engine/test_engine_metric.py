"""A run judged by VOC07 mAP: per-epoch evaluation, the `best` checkpoint, `workbench evaluate`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from engine_support import small_config

from workbench.data.sources import open_dataset
from workbench.engine.checkpoint import load_checkpoint
from workbench.engine.inference import predict_dataset
from workbench.engine.loading import load_trained_model
from workbench.engine.timing import TIMING_KEYS, without_timing
from workbench.engine.trainer import train
from workbench.evaluation import voc_map

COCO_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}
PER_IOU = {"AP50", "AP60", "AP70", "AP80", "AP90"}


def _evals(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "eval"]


@pytest.fixture(scope="module")
def voc_run(small_shapes, tmp_path_factory):
    run = tmp_path_factory.mktemp("voc_run")
    result = train(small_config(small_shapes, metric="voc07"), run, progress="off")
    return run, result


def test_per_epoch_evaluation_reports_coco_per_iou_and_voc_and_best_follows_voc07(voc_run):
    run, result = voc_run
    evals = _evals(run)
    assert [e["epoch"] for e in evals] == [1, 2]
    for e in evals:
        assert COCO_KEYS | PER_IOU | {"voc07_mAP", "voc_allpoint_mAP"} <= set(e)
        assert json.loads((run / "eval" / f"epoch_{e['epoch']}.json").read_text()) == {
            k: v for k, v in e.items() if k not in ("kind", "epoch", "step")}
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best_metric"] == "voc07_mAP" == result.best_metric
    assert best["best_ap"] == max(e["voc07_mAP"] for e in evals) == result.best_ap
    assert json.loads((run / "config.json").read_text())["metric"] == "voc07"


def _evaluate_cli(run, *extra):
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "evaluate", "--run", str(run), "--checkpoint", "last", "--device", "cpu",
         "-q", *extra], capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_evaluate_cli_reports_voc07_of_the_run_and_equals_voc_map_computed_directly(voc_run):
    run, _ = voc_run
    metrics = _evaluate_cli(run)  # the run's own metric: voc07
    assert COCO_KEYS | PER_IOU <= set(metrics)
    assert json.loads((run / "eval" / "last_val.json").read_text()) == metrics
    last_epoch = _evals(run)[-1]
    accuracy = without_timing(metrics)  # the forward time per image differs from pass to pass
    assert accuracy == {k: last_epoch[k] for k in accuracy}  # `last` is the epoch-2 checkpoint

    # VOC mAP from the detections and the dataset's own records, without COCO entries
    model, cfg, _ = load_trained_model(run, "last", "cpu")
    dataset = open_dataset(cfg.data.spec, cfg.data.val_split)
    preds = {p.image_id: p.detections for p in predict_dataset(model, dataset, torch.device("cpu"))}
    records = {r.image_id: r for r in dataset.records}
    ids = sorted(records)
    gts = [{"boxes": records[i].boxes, "labels": records[i].labels, "difficult": records[i].ignore} for i in ids]
    for use_07, key in ((True, "voc07_mAP"), (False, "voc_allpoint_mAP")):
        direct = voc_map([preds[i] for i in ids], gts, dataset.class_names, use_07_metric=use_07)
        assert metrics[key] == pytest.approx(direct.mAP, abs=1e-9), key
    for name, ap in voc_map([preds[i] for i in ids], gts, dataset.class_names).ap_per_class().items():
        assert metrics[f"voc07_AP/{name}"] == (None if math.isnan(ap) else pytest.approx(ap, abs=1e-9)), name


def test_evaluate_cli_metric_flag_overrides_the_runs_metric(voc_run):
    run, _ = voc_run
    metrics = _evaluate_cli(run, "--metric", "coco")
    assert set(metrics) == COCO_KEYS | PER_IOU | set(TIMING_KEYS)
