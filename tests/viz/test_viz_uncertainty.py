"""The uncertainty figures: pure builders over small hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.viz.uncertainty import (
    detections_by_uncertainty_figure,
    difficulty_map_figure,
    uncertainty_distribution_figure,
    uncertainty_map_figure,
)


def _layers(fig):
    return [(t.meta or {}).get("layer") if isinstance(t.meta, dict) else None for t in fig.data]


def test_uncertainty_map_has_one_panel_per_map_on_one_colour_scale():
    maps = {"stride 8": np.zeros((4, 5)), "stride 16": np.full((4, 5), 0.2), "maximum over the scales": np.full((4, 5), 0.4)}
    image = np.zeros((32, 40, 3), dtype=np.uint8)
    fig = uncertainty_map_figure(maps, (8.0, 8.0), image=image, boxes=[[1, 2, 10, 20]])
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert [t.name for t in heatmaps] == list(maps)
    assert all(t.zmin == 0 and t.zmax == pytest.approx(0.4) for t in heatmaps)
    assert sum(bool(t.showscale) for t in heatmaps) == 1
    assert heatmaps[0].dx == 8.0 and heatmaps[0].x0 == 4.0
    assert _layers(fig).count("gt") == 3 and _layers(fig).count("image") == 3
    with pytest.raises(ValueError):
        uncertainty_map_figure({}, (8.0, 8.0))


def test_difficulty_map_marks_the_anchors_by_outcome():
    points = {"TP": np.array([[4.0, 4.0]]), "FP": np.array([[12.0, 4.0], [20.0, 12.0]]), "FN": np.zeros((0, 2))}
    fig = difficulty_map_figure(torch.rand(3, 4), (8.0, 8.0), gt_boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]),
                                points=points)
    (heat,) = [t for t in fig.data if t.type == "heatmap"]
    assert (heat.zmin, heat.zmax) == (0.0, 1.0)
    markers = {t.meta["layer"]: t for t in fig.data if t.type == "scatter" and t.mode == "markers"}
    assert set(markers) == {"anchors_tp", "anchors_fp", "anchors_fn"}
    assert list(markers["anchors_fp"].x) == [12.0, 20.0] and markers["anchors_fp"].name == "FP anchors (2)"
    assert fig.layout.yaxis.range == (24, 0) and fig.layout.xaxis.range == (0, 32)  # 3 x 4 cells of 8 pixels


def test_detections_are_coloured_by_their_uncertainty():
    detections = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 30.0], [1.0, 1.0, 3.0, 3.0]]),
        "scores": torch.tensor([0.9, 0.5, 0.1]),
        "labels": torch.tensor([1, 2, 1]),
        "uncertainty": torch.tensor([0.0, 0.8, 0.4]),
    }
    fig = detections_by_uncertainty_figure(detections, image_size=(40, 40), score_threshold=0.3,
                                           class_names=["a", "b"])
    boxes = [t for t in fig.data if (t.meta or {}).get("layer") == "detections" and t.mode == "lines"]
    assert len(boxes) == 2  # the third scores below the threshold
    assert boxes[0].line.color != boxes[1].line.color
    (scale,) = [t for t in fig.data if t.mode == "markers"]
    assert list(scale.marker.color) == [0.0, pytest.approx(0.8)] and scale.marker.showscale
    assert "uncertainty 0.800" in boxes[1].hovertext[0] and boxes[1].hovertext[0].startswith("b 0.500")


def test_the_distribution_of_true_and_false_positives():
    fig = uncertainty_distribution_figure(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.7]), auroc=1.0)
    assert [t.type for t in fig.data] == ["histogram", "histogram"]
    assert fig.data[0].name == "true positives (3, mean 0.200)"
    assert fig.data[1].name == "false positives (2, mean 0.600)"
    assert "AUROC 1.000" in fig.layout.title.text
    empty = uncertainty_distribution_figure(np.zeros(0), np.array([0.5]))
    assert empty.data[0].name == "true positives (0, none)"
