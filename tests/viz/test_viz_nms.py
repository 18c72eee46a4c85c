"""NMS figures: slider steps equal torchvision's keep sets; suppressed boxes link to suppressors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from viz_records import clustered_boxes, make_image, make_records, nms_record

from workbench.viz.nms import (
    keep_counts_figure,
    kept_detections,
    nms_input,
    nms_slider_figure,
    rerun_nms,
    suppression_layers,
    suppression_summary,
)

THRESHOLDS = [0.1, 0.3, 0.5, 0.7, 0.9]


def visible_at(fig, step):
    flags = fig.layout.sliders[0].steps[step].args[0]["visible"]
    return [trace for trace, shown in zip(fig.data, flags) if shown]


def random_input(seed: int, count: int = 80):
    g = torch.Generator().manual_seed(seed)
    boxes = clustered_boxes(g, count, 100)
    scores = torch.rand(count, generator=g).round(decimals=1)  # ties, to check the order rule too
    labels = torch.randint(1, 4, (count,), generator=g)
    return boxes, scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_slider_step_keeps_what_batched_nms_keeps(seed):
    boxes, scores, labels = random_input(seed)
    fig = nms_slider_figure(boxes, scores, labels, thresholds=THRESHOLDS, image_size=(100, 100))
    assert len(fig.layout.sliders[0].steps) == len(THRESHOLDS)
    for step, threshold in enumerate(THRESHOLDS):
        kept = [t for t in visible_at(fig, step) if t.meta["layer"] == "kept"]
        assert len(kept) == 1 and kept[0].meta["threshold"] == threshold
        assert kept[0].meta["keep"] == torchvision.ops.batched_nms(boxes, scores, labels, threshold).tolist()


def test_slider_without_groups_matches_plain_nms_and_shows_one_step_at_a_time():
    boxes, scores, _ = random_input(5)
    fig = nms_slider_figure(boxes, scores, thresholds=THRESHOLDS, image=make_image(0, 100), active=1)
    for step, threshold in enumerate(THRESHOLDS):
        shown = visible_at(fig, step)
        assert [t.meta["layer"] for t in shown] == ["image", "kept", "suppressed", "suppressed"]
        assert all(t.meta.get("threshold") in (None, threshold) for t in shown)
        assert shown[1].meta["keep"] == torchvision.ops.nms(boxes, scores, threshold).tolist()
    initially = [t for t in fig.data if t.visible is not False]
    assert [t.meta.get("threshold") for t in initially if t.meta["layer"] != "image"] == [0.3, 0.3, 0.3]
    assert "0.30 keeps" in fig.layout.title.text


def test_suppressed_boxes_link_to_their_suppressors_with_iou_and_scores():
    record = make_records(seed=3)["rcnn_nms"]
    outline, links = suppression_layers(record, class_names=["a", "b", "c"])
    by = record["suppressed_by"]
    rows = torch.nonzero(by >= 0).flatten().tolist()
    assert outline.meta["index"] == rows and outline.meta["count"] == len(rows)
    assert links.meta["pairs"] == [[j, int(by[j])] for j in rows]
    centres = (record["boxes"][:, :2] + record["boxes"][:, 2:]) / 2
    first, target = rows[0], int(by[rows[0]])
    assert np.allclose([links.x[0], links.y[0]], centres[first].tolist())
    assert np.allclose([links.x[1], links.y[1]], centres[target].tolist())
    assert math.isnan(links.x[2])
    text = links.hovertext[0]
    assert f"#{first} suppressed by #{target}" in text
    assert f"IoU {float(record['suppressor_iou'][first]):.3f} > 0.50" in text
    assert f"score {float(record['scores'][first]):.3f} (suppressor {float(record['scores'][target]):.3f})" in text


def test_min_score_hides_low_scoring_suppressed_boxes():
    record = make_records(seed=4)["rcnn_nms"]
    outline, links = suppression_layers(record, min_score=0.5)
    for j in outline.meta["index"]:
        assert record["scores"][j] >= 0.5 and record["suppressed_by"][j] >= 0
    expected = int(((record["suppressed_by"] >= 0) & (record["scores"] >= 0.5)).sum())
    assert outline.meta["count"] == expected == len(links.meta["pairs"])


def test_rerun_nms_at_the_recorded_threshold_reproduces_the_record():
    record = make_records(seed=5)["rcnn_nms"]
    again = rerun_nms(record, 0.5)
    assert torch.equal(again["keep"], record["keep"])
    assert torch.equal(again["suppressed_by"], record["suppressed_by"])
    looser = rerun_nms(record, 0.9)
    assert len(looser["keep"]) >= len(record["keep"])


def test_nms_input_selects_by_score_then_top_k_in_record_order():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3, 0.7])
    record = {"boxes": torch.arange(24, dtype=torch.float32).view(6, 4), "scores": scores, "idxs": torch.arange(6)}
    chosen = nms_input(record, min_score=0.2, top_k=3)
    assert chosen["index"].tolist() == [0, 3, 5]
    assert torch.equal(chosen["boxes"], record["boxes"][[0, 3, 5]])
    assert chosen["idxs"].tolist() == [0, 3, 5]
    assert nms_input(record)["index"].tolist() == list(range(6))


def test_suppression_summary_counts():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9], [1, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    record = nms_record(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.zeros(4, dtype=torch.int64), 0.5)
    summary = suppression_summary(record)
    assert summary["boxes"] == 4 and summary["kept"] == 2 and summary["suppressed"] == 2
    assert summary["max_suppressed_by_one"] == 2
    assert summary["median_iou"] == pytest.approx(float(np.median([0.9, 0.9])))


def test_keep_counts_fall_as_the_threshold_tightens():
    boxes, scores, labels = random_input(7)
    fig = keep_counts_figure(boxes, scores, labels, thresholds=THRESHOLDS)
    expected = [len(torchvision.ops.batched_nms(boxes, scores, labels, t)) for t in THRESHOLDS]
    assert list(fig.data[0].y) == expected and expected == sorted(expected)


def test_kept_detections_follow_keep_order_and_cap():
    record = make_records(seed=6)["rcnn_nms"]
    top = kept_detections(record, max_detections=3)
    assert torch.equal(top["boxes"], record["boxes"][record["keep"][:3]])
    assert torch.equal(top["labels"], record["idxs"][record["keep"][:3]])
