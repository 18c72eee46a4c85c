"""Proposal offsets by objectness (paper Fig. 3) and the figure builders."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from workbench.methods.kl_rpn.analysis import dataset_gt_boxes, objectness_offsets, offsets_by_objectness
from workbench.viz.proposals import objectness_offsets_figure

GT = torch.tensor([[10.0, 10.0, 50.0, 50.0]])  # centre 30, 30; side 40


def _box(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_offsets_are_in_delta_space_and_split_by_score():
    proposals = torch.tensor(
        [
            _box(30, 30, 40, 40),  # exact: offsets 0
            _box(34, 30, 40, 40),  # |dx| = 4 / 40
            _box(30, 30, 20, 40),  # |dw| = log 2
            _box(30, 25, 40, 50),  # |dy| = 5 / 50, |dh| = log(40 / 50)
            _box(200, 200, 10, 10),  # no overlap with the GT: never counted
        ]
    )
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0, 9.0])
    high, low = offsets_by_objectness(proposals, scores, GT, factor=5)
    # 4 overlapping proposals -> K = min(5 x 1, 4 // 2) = 2 from each end, disjoint
    assert high.shape == (2, 4) and low.shape == (2, 4)
    assert torch.allclose(high[0], torch.zeros(4), atol=1e-6)
    assert torch.allclose(high[1], torch.tensor([0.1, 0.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(low[0], torch.tensor([0.0, 0.0, math.log(2.0), 0.0]), atol=1e-6)
    assert torch.allclose(low[1], torch.tensor([0.0, 0.1, 0.0, abs(math.log(0.8))]), atol=1e-6)


def test_factor_limits_the_count_per_gt_and_each_proposal_takes_its_best_gt():
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 120.0, 120.0]])
    proposals = torch.tensor([_box(5, 5, 10, 10)] * 10 + [_box(112, 110, 20, 20)] * 10)
    scores = torch.arange(20, dtype=torch.float32)
    high, low = offsets_by_objectness(proposals, scores, gts, factor=2)
    assert high.shape == (4, 4) and low.shape == (4, 4)
    assert torch.allclose(high[:, 0], torch.full((4,), 0.1))  # top scores: the second GT's proposals
    assert torch.allclose(low, torch.zeros(4, 4))


def test_images_without_gt_or_overlap_contribute_nothing():
    empty_gt = offsets_by_objectness(torch.tensor([_box(5, 5, 4, 4)]), torch.ones(1), torch.zeros(0, 4))
    far = offsets_by_objectness(torch.tensor([_box(500, 500, 4, 4)] * 3), torch.ones(3), GT)
    assert all(t.shape == (0, 4) for t in empty_gt + far)
    pooled = objectness_offsets(
        {1: (torch.tensor([_box(30, 30, 40, 40), _box(32, 30, 40, 40)]), torch.tensor([2.0, 1.0])),
         2: (torch.zeros(0, 4), torch.zeros(0))},
        {1: GT, 2: GT},
    )
    assert pooled.num_images == 2 and pooled.high.shape == (1, 4)
    summary = pooled.summary()
    assert summary["high_x"] == pytest.approx(0.0, abs=1e-6) and summary["low_x"] == pytest.approx(0.05)


def test_dataset_gt_boxes_leaves_out_ignored_boxes():
    class Record:
        def __init__(self, image_id, boxes, ignore):
            self.image_id, self.boxes, self.ignore = image_id, np.asarray(boxes, float), np.asarray(ignore)

    class Data:
        records = [Record(7, [[0, 0, 5, 5], [1, 1, 9, 9]], [False, True]), Record(9, np.zeros((0, 4)), [])]

    gt = dataset_gt_boxes(Data())
    assert gt[7].tolist() == [[0.0, 0.0, 5.0, 5.0]] and gt[9].shape == (0, 4)
    assert list(dataset_gt_boxes(Data(), indices=[1])) == [9]


def test_offsets_figure_has_a_row_per_detector_and_both_ends_per_coordinate():
    rng = np.random.default_rng(0)
    data = {
        "RPN": (rng.random((30, 4)), rng.random((30, 4))),
        "KL-RPN": (rng.random((20, 4)) * 0.1, rng.random((25, 4))),
    }
    fig = objectness_offsets_figure(data)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2 * 4 * 2
    assert [t.name for t in fig.data[:2]] == ["high objectness", "low objectness"]
    assert np.allclose(fig.data[8].x, data["KL-RPN"][0][:, 0])
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        objectness_offsets_figure({"bad": (np.zeros((3, 3)), np.zeros((3, 4)))})


def test_sigma_map_panels_say_what_they_show_and_place_anchor_cells():
    from workbench.methods.kl_rpn.uncertainty import RECORD_VIEWS, uncertainty_maps
    from workbench.viz.maps import map_panels_figure

    log_var = torch.zeros(1, 8, 2, 2)
    log_var[0, 0:4, 0, 0] = -1.0
    record = uncertainty_maps([log_var], [2], (8, 8), [(8, 8)], [(12, 12)])[0]  # cells of 3 x 3 px
    image = np.zeros((12, 12, 3), dtype=np.uint8)
    fig = map_panels_figure(record, RECORD_VIEWS, image=image, boxes=np.array([[1, 2, 5, 6]]))
    heatmaps = [t for t in fig.data if type(t).__name__ == "Heatmap"]
    assert len(heatmaps) == 1  # the mean; the sigma of each coordinate is kept per box
    titles = [a.text.replace("<br>", " ") for a in fig.layout.annotations]
    assert titles[0].startswith("mean sigma of the box offsets") and "anchor centres" in titles[0]
    assert heatmaps[0].colorbar.title.text == "offset sigma"
    # the first cell (anchor centre 0, cell [0, 3) px) holds the chosen anchor's mean sigma
    assert heatmaps[0].x0 == 1.5 and heatmaps[0].dx == 3.0 and heatmaps[0].y0 == 1.5
    assert np.asarray(heatmaps[0].z)[0, 0] == pytest.approx(math.exp(-0.5), rel=1e-3)  # stored as float16
    with pytest.raises(ValueError, match="none of the heatmap views"):
        map_panels_figure({"other": torch.zeros(2, 2)}, RECORD_VIEWS)
