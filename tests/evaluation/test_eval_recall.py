"""Class-agnostic proposal recall against pycocotools and a brute-force matching."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from coco_synthetic import make_gt
from pycocotools.cocoeval import COCOeval

from workbench.evaluation.coco_files import coco_gt_from_dict
from workbench.evaluation.recall import proposal_recall, proposals_to_coco_results


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


def _brute_force_recall(gt_boxes, proposals, top_n: int, threshold: float) -> float:
    """Greedy one-to-one matching: proposals by score take the best free GT with IoU >= t."""
    found = total = 0
    for image_id, boxes in gt_boxes.items():
        total += len(boxes)
        if image_id not in proposals or len(boxes) == 0:
            continue
        props, scores = proposals[image_id]
        free = np.ones(len(boxes), dtype=bool)
        for index in np.argsort(-scores, kind="stable")[:top_n]:
            ious = np.where(free, _iou(props[index], boxes), -1.0)
            best = int(np.argmax(ious))
            if ious[best] >= threshold:
                free[best] = False
                found += 1
    return found / total


def _scene(seed: int, per_image: int):
    """A crowd-free ground truth and random proposals (half near objects, half anywhere)."""
    gt = make_gt(seed)
    gt["annotations"] = [a for a in gt["annotations"] if not a["iscrowd"]]
    rng = np.random.default_rng(seed)
    gt_boxes, proposals = {}, {}
    for image in gt["images"]:
        anns = [a["bbox"] for a in gt["annotations"] if a["image_id"] == image["id"]]
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in anns]).reshape(-1, 4)
        gt_boxes[image["id"]] = xyxy
        near = xyxy[rng.integers(0, len(xyxy), per_image // 2)] if len(xyxy) else np.zeros((0, 4))
        near = near + rng.normal(0, 6, near.shape)
        corner = rng.uniform(0, 500, (per_image - len(near), 2))
        anywhere = np.concatenate([corner, corner + rng.uniform(5, 150, corner.shape)], axis=1)
        boxes = np.concatenate([near, anywhere])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        proposals[image["id"]] = (boxes, rng.random(len(boxes)))
    return gt, gt_boxes, proposals


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_at_05_and_07_equals_brute_force_matching(seed):
    gt, gt_boxes, proposals = _scene(seed, per_image=40)
    metrics = proposal_recall(coco_gt_from_dict(gt), proposals, max_dets=(5, 10, 40))
    for n in (5, 10, 40):
        assert metrics[f"R50@{n}"] == pytest.approx(
            _brute_force_recall(gt_boxes, proposals, n, 0.5)
        )
        assert metrics[f"R70@{n}"] == pytest.approx(
            _brute_force_recall(gt_boxes, proposals, n, 0.7)
        )
    thresholds = np.linspace(0.5, 0.95, 10)
    expected_ar = np.mean([_brute_force_recall(gt_boxes, proposals, 40, t) for t in thresholds])
    assert metrics["AR@40"] == pytest.approx(expected_ar)
    assert 0 < metrics["R50@5"] < metrics["R50@40"] < 1  # the scene is neither trivial nor hopeless


def test_default_keys_equal_pycocotools_class_agnostic_summary():
    gt_dict, _, proposals = _scene(2, per_image=30)
    gt_dict["annotations"][0]["iscrowd"] = 1  # a crowd box is ignored, not missed
    coco_gt = coco_gt_from_dict(gt_dict)
    metrics = proposal_recall(coco_gt, proposals)
    assert list(metrics) == [f"{k}@{n}" for k in ("AR", "R50", "R70") for n in (100, 300, 1000)]
    with contextlib.redirect_stdout(io.StringIO()):
        direct = COCOeval(
            coco_gt, coco_gt.loadRes(proposals_to_coco_results(coco_gt, proposals)), "bbox"
        )
        direct.params.useCats = 0
        direct.params.maxDets = [100, 300, 1000]
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    assert [metrics["AR@100"], metrics["AR@300"], metrics["AR@1000"]] == list(direct.stats[6:9])


def test_top_n_cut_by_hand():
    # One object; the only proposal that finds it is ranked 150th of 200 in its image:
    # it is missed with the best 100 and found with the best 300 or 1000.
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 3, "name": "a"}, {"id": 4, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 4, "bbox": [100.0, 100.0, 50.0, 50.0]}
        ],
    }
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(200, 1)
    boxes[149] = torch.tensor([100.0, 100.0, 150.0, 150.0])
    scores = torch.linspace(1.0, 0.0, 200)
    metrics = proposal_recall(coco_gt_from_dict(gt), {1: (boxes, scores)})
    assert metrics["AR@100"] == 0.0 and metrics["R50@100"] == 0.0
    assert metrics["AR@300"] == pytest.approx(1.0) and metrics["AR@1000"] == pytest.approx(1.0)


def test_duplicates_count_once_and_missing_images_count_as_misses():
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50.0, 50.0, 10.0, 10.0]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0]},
        ],
    }
    # image 1: two exact copies of the first object; image 2 has no proposals at all
    proposals = {
        1: (np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]), np.array([0.9, 0.8]))
    }
    metrics = proposal_recall(coco_gt_from_dict(gt), proposals)
    assert metrics["AR@100"] == pytest.approx(1 / 3)
    assert metrics["R70@1000"] == pytest.approx(1 / 3)


def test_no_proposals_at_all_give_zero_recall():
    gt, _, _ = _scene(0, per_image=2)
    metrics = proposal_recall(coco_gt_from_dict(gt), {})
    assert set(metrics.values()) == {0.0}


def test_bad_proposals_raise():
    gt, _, _ = _scene(0, per_image=2)
    coco_gt = coco_gt_from_dict(gt)
    with pytest.raises(ValueError, match="not in the ground truth"):
        proposal_recall(coco_gt, {12345: (np.zeros((1, 4)), np.ones(1))})
    with pytest.raises(ValueError, match="finite"):
        proposal_recall(coco_gt, {10: (np.array([[0.0, 0.0, np.nan, 1.0]]), np.ones(1))})
    with pytest.raises(ValueError, match="x2 >= x1"):
        proposal_recall(coco_gt, {10: (np.array([[5.0, 0.0, 1.0, 1.0]]), np.ones(1))})
