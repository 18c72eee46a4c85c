"""PASCAL VOC mean average precision: VOC07 11-point and all-point AP.

Matching follows the VOC devkit (``VOCevaldet.m``), per class:

1. all detections of the class, over all images, are sorted by score (highest first; ties
   keep image order, then detection order);
2. each detection takes the ground-truth box of its image and class with the largest IoU
   (difficult boxes included). If that IoU is ``>= iou_threshold``: a difficult box makes the
   detection *ignored* (neither TP nor FP); a box not yet taken makes it a TP and takes the
   box; a box already taken makes it a FP (duplicate). Otherwise it is a FP.
3. ``recall = cumTP / #non-difficult GT``, ``precision = cumTP / (cumTP + cumFP)`` over the
   detections that are not ignored, in score order.

AP (``voc_ap``):

- ``use_07_metric=True``: the VOC2007 11-point interpolation, the mean over
  ``t in {0, 0.1, .., 1}`` of the largest precision at recall ``>= t`` (0 when recall never
  reaches ``t``). The levels are the exact tenths ``i / 10``, so a recall of exactly 0.3 or
  0.6 counts for that level (``np.arange(0, 1.1, 0.1)`` in some Python ports yields
  ``0.30000000000000004`` and misses it).
- ``use_07_metric=False``: the area under the monotone precision envelope (VOC2010+):
  precision is replaced by its running maximum from the right and integrated over recall.

IoU convention: boxes are continuous absolute ``xyxy`` (width ``x2 - x1``), as everywhere in
the workbench and in COCO. ``pixel_inclusive=True`` uses the devkit's inclusive pixel
convention (width ``x2 - x1 + 1``) for boxes in integer pixel indices.

A class without non-difficult ground truth has AP ``nan`` and is left out of the mean.
Labels are the workbench's contiguous ``1..C``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.evaluation._arrays import as_boxes, as_numpy, as_vector, field


def voc_ap(recall: Any, precision: Any, use_07_metric: bool) -> float:
    """Average precision from a recall / precision curve (in detection order).

    ``recall`` is non-decreasing; both have one entry per (non-ignored) detection. An empty
    curve gives 0.
    """
    recall = as_numpy(recall).reshape(-1)
    precision = as_numpy(precision).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(f"recall {recall.shape} and precision {precision.shape} differ in length")
    if use_07_metric:
        total = 0.0
        for level in np.arange(11) / 10.0:
            reached = precision[recall >= level]
            total += float(reached.max()) if reached.size else 0.0
        return total / 11.0
    rec = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(rec[1:] != rec[:-1])
    return float(np.sum((rec[steps + 1] - rec[steps]) * envelope[steps + 1]))


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray, pixel_inclusive: bool) -> np.ndarray:
    """IoU of one ``xyxy`` box with ``(M, 4)`` boxes; see the module docstring for ``+1``."""
    extra = 1.0 if pixel_inclusive else 0.0
    width = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + extra
    height = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + extra
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area = (box[2] - box[0] + extra) * (box[3] - box[1] + extra)
    areas = (boxes[:, 2] - boxes[:, 0] + extra) * (boxes[:, 3] - boxes[:, 1] + extra)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class VocClassResult:
    """One class: its AP and the curve it came from.

    ``recall``/``precision`` have one entry per detection that is not ignored, in score
    order; ``num_gt`` counts non-difficult boxes; ``tp`` marks true positives along the curve.
    """

    ap: float
    num_gt: int
    num_detections: int
    recall: np.ndarray
    precision: np.ndarray
    tp: np.ndarray


@dataclass(frozen=True)
class VocResult:
    """Per-class results keyed by class name (or label) and their mean over defined APs."""

    per_class: dict[Hashable, VocClassResult]
    mAP: float

    def ap_per_class(self) -> dict[Hashable, float]:
        """Class -> AP (``nan`` for a class without non-difficult ground truth)."""
        return {name: result.ap for name, result in self.per_class.items()}

    def as_metrics(self) -> dict[str, float | None]:
        """``{"mAP": .., "AP/<class>": ..}`` for JSON; an undefined AP becomes ``None``."""

        def clean(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        metrics = {"mAP": clean(self.mAP)}
        metrics.update({f"AP/{name}": clean(r.ap) for name, r in self.per_class.items()})
        return metrics


@dataclass(frozen=True)
class _Image:
    """One image's detections and ground truth as NumPy arrays."""

    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_difficult: np.ndarray


def _to_image(detections: Any, ground_truth: Any, index: int) -> _Image:
    det, gt = f"detections[{index}]", f"ground_truths[{index}]"
    det_boxes = as_boxes(field(detections, "boxes"), f"{det}.boxes")
    gt_boxes = as_boxes(field(ground_truth, "boxes"), f"{gt}.boxes")
    n, g = len(det_boxes), len(gt_boxes)
    difficult = field(ground_truth, "difficult")
    if difficult is None:
        difficult = np.zeros(g, dtype=bool)
    return _Image(
        det_boxes=det_boxes,
        det_scores=as_vector(field(detections, "scores"), n, f"{det}.scores"),
        det_labels=as_vector(field(detections, "labels"), n, f"{det}.labels", np.int64),
        gt_boxes=gt_boxes,
        gt_labels=as_vector(field(ground_truth, "labels"), g, f"{gt}.labels", np.int64),
        gt_difficult=as_vector(difficult, g, f"{gt}.difficult", bool),
    )


def _class_names(classes: int | Sequence[str]) -> list[Hashable]:
    """Keys of labels ``1..C``: the labels themselves for ``C``, else the given names."""
    if isinstance(classes, int):
        if classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {classes}")
        return list(range(1, classes + 1))
    names = list(classes)
    if not names or len(set(names)) != len(names):
        raise ValueError("class names must be a non-empty list of distinct names")
    return names


def _match_class(images: list[_Image], label: int, iou_threshold: float, pixel_inclusive: bool):
    """Score-ordered TP / FP / ignored flags of one class's detections; non-difficult GT count."""
    scores, owners, boxes = [], [], []
    taken, gts, difficult = [], [], []
    for i, image in enumerate(images):
        keep = image.det_labels == label
        scores.append(image.det_scores[keep])
        boxes.append(image.det_boxes[keep])
        owners.append(np.full(int(keep.sum()), i))
        is_class = image.gt_labels == label
        gts.append(image.gt_boxes[is_class])
        difficult.append(image.gt_difficult[is_class])
        taken.append(np.zeros(int(is_class.sum()), dtype=bool))
    scores, owners, boxes = np.concatenate(scores), np.concatenate(owners), np.concatenate(boxes)
    num_gt = int(sum((~d).sum() for d in difficult))
    order = np.argsort(-scores, kind="stable")
    outcome = np.zeros(len(order), dtype=np.int8)  # 1 TP, -1 FP, 0 ignored
    for rank, d in enumerate(order):
        image = owners[d]
        if len(gts[image]) == 0:
            outcome[rank] = -1
            continue
        ious = _iou_one_to_many(boxes[d], gts[image], pixel_inclusive)
        best = int(np.argmax(ious))
        if ious[best] < iou_threshold:
            outcome[rank] = -1
        elif difficult[image][best]:
            outcome[rank] = 0
        elif taken[image][best]:
            outcome[rank] = -1
        else:
            taken[image][best] = True
            outcome[rank] = 1
    return outcome, num_gt


def _class_result(outcome: np.ndarray, num_gt: int, use_07_metric: bool) -> VocClassResult:
    counted = outcome[outcome != 0]
    tp = counted == 1
    cum_tp = np.cumsum(tp).astype(float)
    cum_fp = np.cumsum(~tp).astype(float)
    precision = cum_tp / np.maximum(cum_tp + cum_fp, 1.0)
    if num_gt == 0:
        recall = np.full(len(counted), np.nan)
        ap = float("nan")
    else:
        recall = cum_tp / num_gt
        ap = voc_ap(recall, precision, use_07_metric)
    return VocClassResult(ap, num_gt, len(outcome), recall, precision, tp)


def voc_map(
    detections: Sequence[Any],
    ground_truths: Sequence[Any],
    classes: int | Sequence[str],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    pixel_inclusive: bool = False,
) -> VocResult:
    """VOC AP per class and their mean.

    - ``detections``: per image a ``Detections`` or a mapping with ``boxes`` ``(N, 4)``
      absolute ``xyxy``, ``scores`` ``(N,)`` and ``labels`` ``(N,)`` (tensors, arrays, lists);
    - ``ground_truths``: per image a mapping (or object) with ``boxes`` ``(G, 4)`` ``xyxy``,
      ``labels`` ``(G,)`` and optionally ``difficult`` ``(G,)`` bools (default all False);
    - ``classes``: the number of classes ``C`` (results keyed by label ``1..C``) or the class
      names in label order (label ``i`` is ``classes[i - 1]``; results keyed by name).

    Labels outside ``1..C`` raise ``ValueError``. See the module docstring for matching, the
    AP definitions and ``pixel_inclusive``.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection sets for {len(ground_truths)} images")
    names = _class_names(classes)
    images = [
        _to_image(d, g, i) for i, (d, g) in enumerate(zip(detections, ground_truths, strict=True))
    ]
    for image in images:
        labels = np.concatenate([image.det_labels, image.gt_labels])
        if labels.size and (labels.min() < 1 or labels.max() > len(names)):
            found = sorted(set(labels.tolist()))
            raise ValueError(f"labels must lie in 1..{len(names)}, got {found}")
    per_class = {}
    for label, name in enumerate(names, start=1):
        outcome, num_gt = _match_class(images, label, iou_threshold, pixel_inclusive)
        per_class[name] = _class_result(outcome, num_gt, use_07_metric)
    defined = [r.ap for r in per_class.values() if not np.isnan(r.ap)]
    mean = float(np.mean(defined)) if defined else float("nan")
    return VocResult(per_class=per_class, mAP=mean)
