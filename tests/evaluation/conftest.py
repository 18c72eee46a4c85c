"""Fixtures of the evaluation tests (builders in ``coco_synthetic``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from coco_synthetic import make_gt, make_predictions, write_json


@pytest.fixture
def gt_dict() -> dict:
    return make_gt(0)


@pytest.fixture
def coco_files(tmp_path: Path, gt_dict: dict) -> tuple[Path, Path]:
    """``(gt.json, pred.json)`` of the seed-0 dataset."""
    gt_file = write_json(tmp_path / "gt.json", gt_dict)
    pred_file = write_json(tmp_path / "pred.json", make_predictions(gt_dict, 0))
    return gt_file, pred_file
