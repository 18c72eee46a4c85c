"""Figures of localisation quality and predicted IoU (IoU-uniform R-CNN's Figs. 1, 3, 6, 7, 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.viz.iou import (
    ap_per_iou_figure,
    best_iou,
    iou_correlation_figure,
    iou_histogram_figure,
    localisation_gain,
    localisation_gain_figure,
    pearson,
    recall_at_ious,
    recall_curve_figure,
)


def test_best_iou_by_hand():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    boxes = np.array([[0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
    np.testing.assert_allclose(best_iou(boxes, gt), [0.5, 1.0, 0.0])
    assert best_iou(boxes, np.zeros((0, 4))).tolist() == [0.0, 0.0, 0.0]


def test_localisation_gain_per_interval_by_hand():
    before = np.array([0.55, 0.58, 0.65, 0.85, 1.0, 0.4])
    after = np.array([0.75, 0.68, 0.70, 0.80, 0.95, 0.9])
    gain = localisation_gain(before, after, edges=(0.5, 0.6, 0.7, 0.8, 1.0))
    np.testing.assert_allclose(gain["gain"][[0, 1, 3]], [0.15, 0.05, -0.05])
    assert np.isnan(gain["gain"][2]) and gain["count"].tolist() == [2, 1, 0, 2]  # 1.0 in the closed last one
    fig = localisation_gain_figure({"generated": gain})
    bar = fig.data[0]
    assert list(bar.x) == ["0.5-0.6", "0.6-0.7", "0.7-0.8", "0.8-1.0"] and list(bar.customdata) == [2, 1, 0, 2]
    with pytest.raises(ValueError, match="shape"):
        localisation_gain(before, after[:3])


def test_iou_histogram_leaves_out_low_ious_and_counts_each_set():
    fig = iou_histogram_figure({"RPN RoIs": [0.1, 0.55, 0.95], "generated": torch.tensor([0.5, 0.6, 0.7, 0.8])})
    assert [t.meta["count"] for t in fig.data] == [2, 4]
    assert list(fig.data[0].x) == [0.55, 0.95] and fig.data[1].name == "generated (n=4)"


def test_correlation_panels_by_hand():
    truth = np.array([0.6, 0.7, 0.8, 0.9, 0.3])
    first = np.array([0.5, 0.5, 0.6, 0.55, 0.9])
    second = np.array([0.62, 0.71, 0.79, 0.93, 0.1])
    fig = iou_correlation_figure(truth, {"first pass": first, "re-pooled": second})
    points = [t for t in fig.data if t.meta["layer"] != "diagonal"]
    assert [t.meta["count"] for t in points] == [4, 4]  # the detection at IoU 0.3 is left out
    assert points[0].meta["pearson"] == pytest.approx(float(np.corrcoef(truth[:4], first[:4])[0, 1]))
    assert points[1].meta["pearson"] > 0.99 and "r = " in fig.layout.annotations[1].text
    assert np.isnan(pearson([0.5], [0.5]))


def test_recall_at_matching_ious_by_hand():
    gt = [(np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]), np.array([1, 2]))]
    # GT 1: found at IoU 0.5 by its class; GT 2: a box of the wrong class at IoU 1 and its own at 0.81
    det = [(np.array([[0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0], [20.0, 20.0, 29.0, 29.0]]), np.array([1, 1, 2]))]
    curve = recall_at_ious(det, gt, thresholds=(0.5, 0.8, 0.9))
    np.testing.assert_allclose(curve["recall"], [1.0, 0.5, 0.0])
    assert int(curve["num_gt"]) == 2
    empty = recall_at_ious([(np.zeros((0, 4)), np.zeros(0))], gt, thresholds=(0.5,))
    assert empty["recall"].tolist() == [0.0]
    fig = recall_curve_figure({"class": curve, "class x IoU": empty})
    assert [t.meta["layer"] for t in fig.data] == ["class", "class x IoU"]


def test_ap_per_iou_mean_and_spread_over_seeds():
    runs = {
        "faster_rcnn": [{"AP50": 0.8, "AP90": 0.1}, {"AP50": 0.6, "AP90": 0.3}],
        "one seed": [{"AP50": 0.7, "AP90": None}],
    }
    fig = ap_per_iou_figure(runs, keys=("AP50", "AP90"))
    a, b = fig.data
    assert a.meta["mean"] == pytest.approx([0.7, 0.2]) and a.meta["std"] == pytest.approx([0.1414214, 0.1414214])
    assert b.meta["mean"][0] == pytest.approx(0.7) and np.isnan(b.meta["mean"][1]) and b.meta["std"] == [0.0, 0.0]
    assert a.name == "faster_rcnn (2 seeds)" and b.name == "one seed (1 seed)"
