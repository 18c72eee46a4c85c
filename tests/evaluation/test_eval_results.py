"""Detections (absolute xyxy) to COCO results entries (xywh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coco_synthetic import make_gt

from workbench.evaluation.coco import coco_metrics
from workbench.evaluation.coco_files import coco_gt_from_dict
from workbench.evaluation.results import detections_to_coco_results, xyxy_to_xywh
from workbench.structures import Detections


def test_xyxy_to_xywh_by_hand_and_empty():
    np.testing.assert_allclose(
        xyxy_to_xywh([[10, 20, 40, 60], [0.5, 0.5, 1.5, 3.0]]),
        [[10, 20, 30, 40], [0.5, 0.5, 1.0, 2.5]],
    )
    assert xyxy_to_xywh(torch.zeros((0, 4))).shape == (0, 4)


def test_detections_become_entries_in_order_with_category_ids():
    detections = Detections(
        boxes=torch.tensor([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 5.0, 5.0]]),
        scores=torch.tensor([0.9, 0.25]),
        labels=torch.tensor([2, 1]),
    )
    entries = detections_to_coco_results([7, 8], [detections, Detections.empty()], {1: 11, 2: 15})
    assert entries == [
        {
            "image_id": 7,
            "category_id": 15,
            "bbox": [10.0, 20.0, 30.0, 40.0],
            "score": pytest.approx(0.9),
        },
        {"image_id": 7, "category_id": 11, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.25},
    ]
    assert all(
        type(v) in (int, float)
        for e in entries
        for v in (e["image_id"], e["category_id"], e["score"])
    )


def test_mapping_input_and_numpy_ids_are_accepted():
    entries = detections_to_coco_results(
        np.array([3]),
        [{"boxes": np.array([[1.0, 1.0, 2.0, 4.0]]), "scores": [0.5], "labels": [1]}],
        {1: 1},
    )
    assert entries == [
        {"image_id": 3, "category_id": 1, "bbox": [1.0, 1.0, 1.0, 3.0], "score": 0.5}
    ]
    assert type(entries[0]["image_id"]) is int


def test_unknown_label_and_length_mismatch_raise():
    detections = {"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [3]}
    with pytest.raises(ValueError, match=r"labels \[3\]"):
        detections_to_coco_results([1], [detections], {1: 1, 2: 2})
    with pytest.raises(ValueError, match="2 image ids for 1 detection sets"):
        detections_to_coco_results([1, 2], [detections], {3: 1})
    with pytest.raises(ValueError, match="labels has 2 entries"):
        detections_to_coco_results([1], [dict(detections, labels=[3, 3])], {3: 1})


def test_ground_truth_as_detections_round_trips_to_perfect_ap():
    gt = make_gt(5)
    label_of = {1: 1, 2: 2, 5: 3}  # contiguous labels of COCO categories 1, 2, 5
    image_ids = [image["id"] for image in gt["images"]]
    detections = []
    for image_id in image_ids:
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        detections.append(
            Detections(
                boxes=torch.tensor(xyxy, dtype=torch.float64).reshape(-1, 4),
                scores=torch.ones(len(anns)),
                labels=torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            )
        )
    results = detections_to_coco_results(image_ids, detections, {v: k for k, v in label_of.items()})
    metrics = coco_metrics(coco_gt_from_dict(gt), results)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)
