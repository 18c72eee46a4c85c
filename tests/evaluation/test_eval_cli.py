"""`workbench evaluate` run as a user runs it: JSON on stdout, exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from coco_synthetic import pycocotools_stats, write_json

REPO = Path(__file__).resolve().parents[2]
KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
PER_IOU = ["AP60", "AP70", "AP80", "AP90"]


def _workbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prints_one_json_object_equal_to_pycocotools_and_writes_out(tmp_path, coco_files):
    gt_file, pred_file = coco_files
    out = tmp_path / "reports" / "metrics.json"
    done = _workbench("evaluate", "--gt", str(gt_file), "--pred", str(pred_file), "--out", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)  # nothing but the JSON object on stdout
    assert list(metrics) == KEYS + PER_IOU  # the COCO numbers first, then AP at more IoUs
    assert [metrics[k] for k in KEYS] == [float(s) for s in pycocotools_stats(gt_file, pred_file)]
    assert json.loads(out.read_text()) == metrics


def test_empty_results_file_gives_zeros(tmp_path, coco_files):
    gt_file, _ = coco_files
    done = _workbench(
        "evaluate", "--gt", str(gt_file), "--pred", str(write_json(tmp_path / "none.json", []))
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {k: 0.0 for k in KEYS + PER_IOU}


def test_metric_voc07_adds_voc_map_to_the_coco_numbers(coco_files):
    gt_file, pred_file = coco_files
    done = _workbench("evaluate", "--gt", str(gt_file), "--pred", str(pred_file), "--metric", "voc07")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert list(metrics)[: len(KEYS) + len(PER_IOU)] == KEYS + PER_IOU
    assert 0 < metrics["voc07_mAP"] <= 1 and 0 < metrics["voc_allpoint_mAP"] <= 1
    assert {k for k in metrics if k.startswith("voc07_AP/")} == {"voc07_AP/class1", "voc07_AP/class2", "voc07_AP/class5"}


GOOD = {"image_id": 10, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
BAD_FILES = {
    "malformed json": ('[{"image_id": 10', "not valid JSON"),
    "not a list": (json.dumps({"image_id": 10}), "must hold a JSON list"),
    "missing key": (
        json.dumps([GOOD, {k: v for k, v in GOOD.items() if k != "score"}]),
        "index 1: missing 'score'",
    ),
    "wrong type": (json.dumps([dict(GOOD, image_id="10")]), "'image_id' must be an integer"),
    "bbox of three": (json.dumps([dict(GOOD, bbox=[1, 2, 3])]), "4 numbers"),
    "negative width": (json.dumps([dict(GOOD, bbox=[1, 2, -3, 4])]), "negative width"),
    "nan score": (json.dumps([dict(GOOD, score=float("nan"))]), "'score' is not finite"),
    "infinite coordinate": (json.dumps([dict(GOOD, bbox=[1, 2, float("inf"), 4])]), "non-finite"),
    "unknown image": (
        json.dumps([GOOD, dict(GOOD, image_id=77), dict(GOOD, image_id=78)]),
        "2 of 3 detections are bad; the first is at index 1",
    ),
    "unknown category": (
        json.dumps([dict(GOOD, category_id=9)]),
        "'category_id' 9 is not a category",
    ),
}


def _assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workbench: error: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_results_file_exits_2_with_one_line(tmp_path, coco_files, kind):
    gt_file, _ = coco_files
    text, reason = BAD_FILES[kind]
    pred = tmp_path / "bad preds.json"
    pred.write_text(text)
    _assert_one_line_error(
        _workbench("evaluate", "--gt", str(gt_file), "--pred", str(pred)), str(pred), reason
    )


def test_missing_results_file_and_bad_ground_truth_exit_2(tmp_path, coco_files):
    gt_file, pred_file = coco_files
    missing = tmp_path / "missing.json"
    _assert_one_line_error(
        _workbench("evaluate", "--gt", str(gt_file), "--pred", str(missing)),
        str(missing),
        "not found",
    )
    bad_gt = tmp_path / "gt_bad.json"
    bad_gt.write_text(json.dumps({"images": [], "annotations": []}))
    _assert_one_line_error(
        _workbench("evaluate", "--gt", str(bad_gt), "--pred", str(pred_file)),
        str(bad_gt),
        "'categories'",
    )
