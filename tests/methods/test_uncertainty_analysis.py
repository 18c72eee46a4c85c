"""The arrays behind the uncertainty figures: anchor outcomes, TP / FP matching, AUROC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import records as R
from workbench.methods.uncertainty.analysis import (
    anchor_outcome_points,
    match_detections,
    tp_fp_uncertainty,
    uncertainty_auroc,
    uncertainty_maps,
)
from workbench.structures import Detections


def _record():
    record = {R.MAP_CELL_SIZE: torch.tensor([16.0, 8.0])}  # original pixels: twice the input's height
    for s, n in ((8, 4), (16, 2), (32, 1)):
        record[f"label_stride{s}"] = torch.zeros(n, n, 3, dtype=torch.int64)
        record[f"predicted_stride{s}"] = torch.zeros(n, n, 3, dtype=torch.bool)
        record[f"bald_stride{s}"] = torch.full((4, 4), float(s))
    record["bald"] = torch.full((4, 4), 32.0)
    record["label_stride8"][1, 2, 0] = 3  # positive, predicted: TP at x 2, y 1
    record["predicted_stride8"][1, 2, 0] = True
    record["predicted_stride16"][0, 1, 2] = True  # negative predicted: FP at x 1, y 0
    record["label_stride32"][0, 0, 1] = 1  # positive missed: FN
    return record


def test_anchor_outcomes_at_the_anchor_centres_in_original_pixels():
    points = anchor_outcome_points(_record())
    # x: (2 + 0.5) * 8 input pixels = 20 original; y: (1 + 0.5) * 8 = 12 input = 24 original
    np.testing.assert_allclose(points["TP"], [[20.0, 24.0]])
    np.testing.assert_allclose(points["FP"], [[24.0, 16.0]])
    np.testing.assert_allclose(points["FN"], [[16.0, 32.0]])
    with pytest.raises(ValueError, match="targets"):
        anchor_outcome_points({R.MAP_CELL_SIZE: torch.tensor([8.0, 8.0])})


def test_the_maps_per_scale_and_over_the_scales():
    maps = uncertainty_maps(_record())
    assert list(maps) == ["stride 8", "stride 16", "stride 32", "maximum over the scales"]


def test_detections_matched_by_the_voc_rule():
    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    gt_labels = torch.tensor([1, 2])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0],
                          [40.0, 40.0, 50.0, 50.0]])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.7])
    labels = torch.tensor([1, 1, 1, 2])
    # the 0.9 box takes GT 0 first; the 0.6 duplicate is an FP; the class-1 box on GT 1 (class 2) is an FP
    assert match_detections(boxes, scores, labels, gt_boxes, gt_labels).tolist() == [False, True, False, False]
    det = Detections(boxes, scores, labels, {"uncertainty": torch.tensor([0.4, 0.1, 0.5, 0.3])})
    tp, fp = tp_fp_uncertainty([det], [{"boxes": gt_boxes, "labels": gt_labels}], score_threshold=0.65)
    np.testing.assert_allclose(tp, [0.1])
    np.testing.assert_allclose(fp, [0.5, 0.3])


def test_auroc_of_the_uncertainty():
    assert uncertainty_auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert uncertainty_auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert uncertainty_auroc([0.1, 0.3], [0.2, 0.3]) == pytest.approx((1 + 1 + 0.5) / 4)
    assert np.isnan(uncertainty_auroc([], [0.2]))
