"""Which detection matched which ground-truth box: pycocotools' COCO matching, per box.

:func:`match_detections` runs one box ``COCOeval`` (pycocotools, the workbench's numbers) over a
whole split and reads, at one IoU threshold (default 0.5), the match of every detection and of
every ground-truth box, the same matching FiftyOne's COCO-style ``evaluate_detections`` writes
per label:

- detections of one image and class are matched in decreasing score order (ties: input order),
  each to the unmatched ground-truth box of its class with the highest IoU at or above the
  threshold (ties: the later box), crowd boxes last; a crowd box (COCO ``iscrowd``, IoU =
  intersection / detection area) can match many detections;
- a detection matched to any box is a true positive, one matched to none a false positive; a
  ground-truth box no detection matched (crowd boxes included) is a miss, and a matched one
  names the first (highest-scored) detection that matched it.

The same ``COCOeval`` is evaluated at IoU 0.50:0.05:0.95 over every box (one area range
without limits: a box is never left out for its area, as FiftyOne leaves none out) and
accumulated, so the precision-recall sweep of the split comes with the matches at no second
pass (crowd matches ignored there, as pycocotools does).

Boxes are absolute ``xyxy`` here, as everywhere inside the workbench; COCO's ``xywh`` stays
inside this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.evaluation.coco_files import quiet_unless

#: IoU thresholds of the COCO sweep (0.50:0.05:0.95).
COCO_IOUS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())
#: Detections per image and class in the precision-recall sweep (pycocotools' and FiftyOne's 100).
SWEEP_MAX_DETS = 100


@dataclass(frozen=True)
class ImageBoxes:
    """The boxes of one image: absolute ``xyxy`` (N, 4), category ids (N,), and either scores
    (N,) (detections) or crowd flags (N,) (ground truth)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None
    crowd: np.ndarray | None = None

    @classmethod
    def of(cls, boxes, labels, scores=None, crowd=None) -> "ImageBoxes":
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = boxes.shape[0]
        return cls(
            boxes, np.asarray(labels, dtype=np.int64).reshape(n),
            None if scores is None else np.asarray(scores, dtype=np.float64).reshape(n),
            None if crowd is None else np.asarray(crowd, dtype=bool).reshape(n),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class ImageMatches:
    """The matches of one image at the matching threshold: for each detection the index of
    its ground-truth box (``-1``: none) and their IoU (NaN: none); for each ground-truth box the
    index of the first detection that matched it (``-1``: a miss) and their IoU."""

    det_gt: np.ndarray
    det_iou: np.ndarray
    gt_det: np.ndarray
    gt_iou: np.ndarray

    @property
    def tp(self) -> int:
        return int((self.det_gt >= 0).sum())

    @property
    def fp(self) -> int:
        return int((self.det_gt < 0).sum())

    @property
    def fn(self) -> int:
        return int((self.gt_det < 0).sum())


@dataclass(frozen=True)
class SplitMatches:
    """:func:`match_detections` of a split: per image matches, and the accumulated
    ``COCOeval`` (IoU 0.50:0.05:0.95, one area range ``all`` without limits; ``eval["precision"]`` is ``[T, R, K, 1, M]``,
    the last max-detections ``SWEEP_MAX_DETS`` per image and class at index 0)."""

    images: list[ImageMatches]
    cocoeval: COCOeval
    iou_threshold: float

    def precision(self, category_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(precision, scores, recall)`` of the sweep, ``[T, K, R]`` for the categories in
        ``category_ids`` order (``-1`` for a category without ground truth), and ``recall``
        ``[T, K]`` (pycocotools' maximum recall)."""
        e = self.cocoeval.eval
        index = [list(self.cocoeval.params.catIds).index(int(c)) for c in category_ids]
        precision = np.transpose(e["precision"][:, :, index, 0, 0], (0, 2, 1))
        scores = np.transpose(e["scores"][:, :, index, 0, 0], (0, 2, 1))
        return precision, scores, e["recall"][:, index, 0, 0]


def _coco(images: list[dict], annotations: list[dict], categories: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with quiet_unless(False):
        coco.createIndex()
    return coco


def _annotations(per_image: Sequence[ImageBoxes], detections: bool) -> tuple[list[dict], list[np.ndarray]]:
    """COCO annotations (ids from 1, image ids from 1) and, per image, the ids of its boxes."""
    annotations, ids = [], []
    next_id = 1
    for image_id, image in enumerate(per_image, start=1):
        xywh = np.concatenate([image.boxes[:, :2], image.boxes[:, 2:] - image.boxes[:, :2]], axis=1)
        area = (xywh[:, 2] * xywh[:, 3]).tolist()
        xywh = xywh.tolist()
        labels = image.labels.tolist()
        ids.append(np.arange(next_id, next_id + len(image)))
        if detections:
            for j, score in enumerate(image.scores.tolist()):
                annotations.append({"id": next_id + j, "image_id": image_id, "category_id": labels[j],
                                    "bbox": xywh[j], "area": area[j], "score": score, "iscrowd": 0})
        else:
            crowd = image.crowd.tolist() if image.crowd is not None else [False] * len(image)
            for j in range(len(image)):
                annotations.append({"id": next_id + j, "image_id": image_id, "category_id": labels[j],
                                    "bbox": xywh[j], "area": area[j], "iscrowd": int(crowd[j])})
        next_id += len(image)
    return annotations, ids


def match_detections(
    ground_truth: Sequence[ImageBoxes],
    detections: Sequence[ImageBoxes],
    category_ids: Sequence[int],
    *,
    iou_threshold: float = 0.5,
) -> SplitMatches:
    """Match the detections of every image to its ground truth (see the module docstring);
    ``ground_truth[i]`` and ``detections[i]`` are the same image. ``category_ids``: every
    category (labels outside it are not matched: all their detections are false positives,
    all their boxes misses)."""
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} images of ground truth but {len(detections)} of detections")
    ious = sorted(set(COCO_IOUS) | {round(float(iou_threshold), 10)})
    t = ious.index(round(float(iou_threshold), 10))
    images = [{"id": i + 1} for i in range(len(ground_truth))]
    categories = [{"id": int(c)} for c in category_ids]
    gt_anns, gt_ids = _annotations(ground_truth, detections=False)
    dt_anns, dt_ids = _annotations(detections, detections=True)
    coco_gt, coco_dt = _coco(images, gt_anns, categories), _coco(images, dt_anns, categories)

    most = max((int(np.bincount(d.labels).max()) for d in detections if len(d)), default=0)
    cocoeval = COCOeval(coco_gt, coco_dt, iouType="bbox")
    p = cocoeval.params
    p.imgIds = [im["id"] for im in images]
    p.catIds = [int(c) for c in category_ids]
    p.iouThrs = np.asarray(ious)
    p.areaRng, p.areaRngLbl = [[-np.inf, np.inf]], ["all"]  # no box left out for its area
    # every detection is matched (the last max-detections); the sweep counts the first 100
    p.maxDets = [SWEEP_MAX_DETS] + ([most] if most > SWEEP_MAX_DETS else [])
    with quiet_unless(False):
        cocoeval.evaluate()
        cocoeval.accumulate()

    matches = []
    for i, (gt, dt) in enumerate(zip(ground_truth, detections)):
        det_gt = np.full(len(dt), -1, dtype=np.int64)
        det_iou = np.full(len(dt), np.nan)
        gt_det = np.full(len(gt), -1, dtype=np.int64)
        gt_iou = np.full(len(gt), np.nan)
        gt_base, dt_base = (int(gt_ids[i][0]) if len(gt) else 0), (int(dt_ids[i][0]) if len(dt) else 0)
        for k, category in enumerate(p.catIds):
            e = cocoeval.evalImgs[k * len(p.imgIds) + i]
            if e is None or not e["dtIds"]:
                continue
            iou_matrix = cocoeval.ious[(i + 1, category)]  # dets in score order x gts in input order
            gt_columns = {int(g["id"]): c for c, g in enumerate(cocoeval._gts[i + 1, category])}
            for row, (dt_id, gt_id) in enumerate(zip(e["dtIds"], e["dtMatches"][t])):
                if gt_id <= 0:
                    continue
                d, g = int(dt_id) - dt_base, int(gt_id) - gt_base
                iou = float(iou_matrix[row, gt_columns[int(gt_id)]])
                det_gt[d], det_iou[d] = g, iou
                if gt_det[g] < 0:  # the first (highest-scored) detection that matched it
                    gt_det[g], gt_iou[g] = d, iou
        matches.append(ImageMatches(det_gt, det_iou, gt_det, gt_iou))
    return SplitMatches(matches, cocoeval, float(iou_threshold))


__all__ = ["COCO_IOUS", "ImageBoxes", "ImageMatches", "SplitMatches", "SWEEP_MAX_DETS", "match_detections"]
