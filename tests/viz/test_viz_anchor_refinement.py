"""The anchor-refinement figures: layers, arrows, colours and their checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.viz.anchor_refinement import (
    ANCHOR_LAYER,
    REFINED_LAYER,
    anchor_iou_shift_figure,
    anchor_refinement_figure,
    detection_sources_figure,
    filtered_share_figure,
)

ANCHORS = torch.tensor([[10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 80.0, 60.0], [0.0, 50.0, 20.0, 90.0]])
REFINED = torch.tensor([[12.0, 10.0, 34.0, 30.0], [45.0, 42.0, 85.0, 66.0], [2.0, 48.0, 22.0, 80.0]])


def layer_counts(fig, layer):
    return sum(t.meta["count"] for t in fig.data if isinstance(t.meta, dict) and t.meta.get("layer") == layer)


def test_anchor_refinement_figure_has_pairs_arrows_and_colour_bins():
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    fig = anchor_refinement_figure(ANCHORS, REFINED, torch.tensor([0.05, 0.95, 0.5]), image=image,
                                   gt_boxes=torch.tensor([[40.0, 40.0, 90.0, 70.0]]))
    assert layer_counts(fig, ANCHOR_LAYER) == layer_counts(fig, REFINED_LAYER) == 3
    assert len(fig.layout.annotations) == 3  # one arrow per anchor
    arrow = fig.layout.annotations[1]
    assert (arrow.ax, arrow.ay, arrow.x, arrow.y) == (60.0, 50.0, 65.0, 54.0)  # centre to centre
    colors = {t.line.color for t in fig.data if getattr(t, "meta", None) and t.meta.get("layer") == REFINED_LAYER}
    assert len(colors) == 3  # three probability bins
    assert tuple(fig.layout.yaxis.range) == (100, 0) and tuple(fig.layout.xaxis.range) == (0, 120)
    with pytest.raises(ValueError, match="align"):
        anchor_refinement_figure(ANCHORS, REFINED[:2], torch.ones(3))


def test_detection_sources_figure_links_anchor_refined_and_box():
    boxes = REFINED + 1.0
    fig = detection_sources_figure(ANCHORS, REFINED, boxes, torch.tensor([1, 2, 1]), torch.tensor([0.9, 0.8, 0.5]),
                                   image_size=(100, 120), class_names=["cat", "dog"])
    assert layer_counts(fig, "detections") == 3 and layer_counts(fig, ANCHOR_LAYER) == 3
    assert len(fig.layout.annotations) == 6  # anchor -> refined, refined -> box
    assert any(t.name.startswith("dog") for t in fig.data)


def test_anchor_iou_shift_figure_reports_the_means():
    fig = anchor_iou_shift_figure(np.array([0.3, 0.5]), np.array([0.6, 0.8]))
    assert [t.meta["mean"] for t in fig.data] == pytest.approx([0.4, 0.7])
    assert "mean 0.700" in fig.data[1].name


def test_filtered_share_figure_one_panel_per_map():
    maps = {"mean": np.full((4, 4), 0.5), "level 0": np.eye(4), "level 1": np.zeros((4, 4))}
    fig = filtered_share_figure(maps, cell=(8.0, 8.0), image=np.zeros((32, 32, 3), dtype=np.uint8))
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 3 and all((h.zmin, h.zmax) == (0.0, 1.0) for h in heatmaps)
    assert sum(bool(h.showscale) for h in heatmaps) == 1
    with pytest.raises(ValueError):
        filtered_share_figure({})
