"""Class-agnostic proposal recall (AR@100/300/1000) through pycocotools.

Proposals are scored boxes without a class. All ground-truth categories are pooled
(``useCats=0``) and each image keeps its ``N`` best-scored proposals. Keys:

- ``AR@N``: recall averaged over IoU 0.50:0.05:0.95, area ``all`` (pycocotools' ``AR``);
- ``R50@N``, ``R70@N``: recall at IoU 0.5 and 0.7.

Crowd ground truth is ignored as in COCO. Images of the ground truth without proposals count
their objects as missed. ``-1`` means the ground truth has no (non-crowd) object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.evaluation.coco import run_cocoeval
from workbench.evaluation.results import boxes_to_coco_results

DEFAULT_MAX_DETS = (100, 300, 1000)


def proposals_to_coco_results(
    coco_gt: COCO, proposals_per_image: Mapping[int, tuple[Any, Any]]
) -> list[dict]:
    """COCO results entries for class-agnostic proposals.

    ``proposals_per_image`` maps an image id of ``coco_gt`` to ``(boxes, scores)``: boxes
    ``(N, 4)`` absolute ``xyxy`` and scores ``(N,)`` (tensors or arrays). Every entry gets the
    smallest category id of the ground truth, which a class-agnostic ``COCOeval`` needs to
    find it. Raises ``ValueError`` for an image id the ground truth does not have, for
    non-finite boxes or scores, or for boxes with ``x2 < x1`` or ``y2 < y1``.
    """
    known = set(coco_gt.getImgIds())
    unknown = sorted(set(proposals_per_image) - known)
    if unknown:
        raise ValueError(f"proposals for image ids not in the ground truth: {unknown[:10]}")
    category_ids = sorted(coco_gt.getCatIds())
    if not category_ids:
        raise ValueError("the ground truth has no categories")
    results = []
    for image_id, (boxes, scores) in proposals_per_image.items():
        entries = boxes_to_coco_results(image_id, boxes, scores, [category_ids[0]] * len(boxes))
        results.extend(entries)
    values = np.array([e["bbox"] + [e["score"]] for e in results], dtype=float).reshape(-1, 5)
    if not np.isfinite(values).all():
        raise ValueError("proposal boxes and scores must be finite")
    if (values[:, 2:4] < 0).any():
        raise ValueError("proposal boxes must have x2 >= x1 and y2 >= y1")
    return results


def _recall_at(cocoeval: COCOeval, iou_index: int | slice, max_det_index: int) -> float:
    """Mean of ``eval["recall"]`` over the given IoU thresholds (area ``all``), or ``-1``."""
    recall = cocoeval.eval["recall"]
    area = list(cocoeval.params.areaRngLbl).index("all")
    values = np.asarray(recall[iou_index, :, area, max_det_index])
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def proposal_recall(
    coco_gt: COCO,
    proposals_per_image: Mapping[int, tuple[Any, Any]],
    *,
    max_dets: Sequence[int] = DEFAULT_MAX_DETS,
    verbose: bool = False,
) -> dict[str, float]:
    """Class-agnostic recall of proposals: ``AR@N``, ``R50@N``, ``R70@N`` for each ``N``.

    ``proposals_per_image``: image id -> ``(boxes xyxy (N, 4), scores (N,))``.
    """
    results = proposals_to_coco_results(coco_gt, proposals_per_image)
    cocoeval = run_cocoeval(
        coco_gt, results, use_cats=False, max_dets=max_dets, summarize=False, verbose=verbose
    )
    thresholds = np.asarray(cocoeval.params.iouThrs)
    t50 = int(np.argmin(np.abs(thresholds - 0.5)))
    t70 = int(np.argmin(np.abs(thresholds - 0.7)))
    metrics = {}
    for m, n in enumerate(cocoeval.params.maxDets):
        metrics[f"AR@{n}"] = _recall_at(cocoeval, slice(None), m)
    for m, n in enumerate(cocoeval.params.maxDets):
        metrics[f"R50@{n}"] = _recall_at(cocoeval, t50, m)
    for m, n in enumerate(cocoeval.params.maxDets):
        metrics[f"R70@{n}"] = _recall_at(cocoeval, t70, m)
    return metrics
