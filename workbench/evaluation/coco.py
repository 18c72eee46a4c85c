"""COCO box metrics through pycocotools, and views into the finished ``COCOeval``.

The twelve numbers are pycocotools' own ``COCOeval.stats`` (``evaluate``, ``accumulate``,
``summarize``), named::

    AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl

AP is averaged over IoU 0.50:0.05:0.95 with 101 recall points, AR is the recall at 1, 10 and
100 detections per image; ``s``/``m``/``l`` are the area ranges (< 32², 32²..96², > 96² pixels).
A value of ``-1`` is pycocotools' "undefined" (no ground truth in that area range).

Array views of the accumulated ``COCOeval`` (``cocoeval.eval``):

- ``precision``: ``[T, R, K, A, M]`` = IoU thresholds x recall thresholds x categories x
  area ranges x max-detections; ``-1`` where a category has no ground truth;
- ``recall``: ``[T, K, A, M]``.

pycocotools' progress prints are swallowed unless ``verbose=True``. An empty results list is
evaluated as "no detections" (pycocotools' own ``loadRes`` fails on it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.evaluation.coco_files import (
    load_coco_gt,
    load_results,
    quiet_unless,
    validate_results,
)

METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


@dataclass(frozen=True)
class CocoEvaluation:
    """A finished ``COCOeval`` (evaluated, accumulated, summarized) and its twelve numbers."""

    cocoeval: COCOeval
    metrics: dict[str, float]

    def ap_per_iou(self) -> dict[str, float]:
        """``AP50`` .. ``AP95``; see :func:`ap_per_iou`."""
        return ap_per_iou(self.cocoeval)

    def ap_per_category(self) -> dict[int, float]:
        """Category id -> AP; see :func:`ap_per_category`."""
        return ap_per_category(self.cocoeval)

    def precision_recall_curves(self, iou_threshold: float = 0.5, area: str = "all"):
        """Category id -> ``(recall, precision)``; see :func:`precision_recall_curves`."""
        return precision_recall_curves(self.cocoeval, iou_threshold=iou_threshold, area=area)


def results_to_coco(coco_gt: COCO, results: list[dict], *, verbose: bool = False) -> COCO:
    """A pycocotools results ``COCO`` built like ``coco_gt.loadRes(results)``.

    ``results`` must be checked entries (``validate_results``); they are modified in place as
    ``loadRes`` does. An empty list gives a results object with no annotations.
    """
    with quiet_unless(verbose):
        if results:
            return coco_gt.loadRes(results)
        empty = COCO()
        empty.dataset = {
            "info": copy.deepcopy(coco_gt.dataset.get("info", {})),
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        empty.createIndex()
        return empty


def run_cocoeval(
    coco_gt: COCO,
    results: list[dict],
    *,
    use_cats: bool = True,
    max_dets: Sequence[int] | None = None,
    summarize: bool = True,
    verbose: bool = False,
) -> COCOeval:
    """Run pycocotools' box ``COCOeval`` on checked results; return it accumulated.

    ``use_cats=False`` pools all categories (class-agnostic, as for proposals);
    ``max_dets`` replaces the default ``[1, 10, 100]``. ``summarize`` fills ``stats``; it
    only makes sense for the default parameters.
    """
    coco_dt = results_to_coco(coco_gt, results, verbose=verbose)
    cocoeval = COCOeval(coco_gt, coco_dt, iouType="bbox")
    cocoeval.params.useCats = int(use_cats)
    if max_dets is not None:
        cocoeval.params.maxDets = sorted(int(m) for m in max_dets)
    with quiet_unless(verbose):
        cocoeval.evaluate()
        cocoeval.accumulate()
        if summarize:
            cocoeval.summarize()
    return cocoeval


def stats_to_metrics(stats: Sequence[float]) -> dict[str, float]:
    """pycocotools' twelve ``stats`` as a ``{name: float}`` dict in ``METRIC_NAMES`` order."""
    if len(stats) != len(METRIC_NAMES):
        raise ValueError(f"expected {len(METRIC_NAMES)} COCO stats, got {len(stats)}")
    return {name: float(value) for name, value in zip(METRIC_NAMES, stats, strict=True)}


def evaluate_coco(
    coco_gt: COCO, results: list[dict], *, verbose: bool = False, source: str = "results"
) -> CocoEvaluation:
    """Check ``results`` against ``coco_gt`` and evaluate them; keep the ``COCOeval``.

    Raises ``PredictionFileError`` (naming ``source``) for malformed entries.
    """
    checked = validate_results(results, coco_gt, source=source)
    cocoeval = run_cocoeval(coco_gt, checked, verbose=verbose)
    return CocoEvaluation(cocoeval=cocoeval, metrics=stats_to_metrics(cocoeval.stats))


def coco_metrics(coco_gt: COCO, results: list[dict], *, verbose: bool = False) -> dict[str, float]:
    """The twelve COCO box metrics of ``results`` (COCO results entries, ``xywh`` boxes)."""
    return evaluate_coco(coco_gt, results, verbose=verbose).metrics


def evaluate_coco_files(gt: Path, pred: Path, *, verbose: bool = False) -> dict[str, float]:
    """The twelve COCO box metrics of a results JSON file against a ground-truth JSON file.

    Raises ``DatasetError`` for a bad ground-truth file and ``PredictionFileError`` for a bad
    results file, each naming the file.
    """
    coco_gt = load_coco_gt(gt, verbose=verbose)
    results = load_results(pred, coco_gt)
    cocoeval = run_cocoeval(coco_gt, results, verbose=verbose)
    return stats_to_metrics(cocoeval.stats)


def _mean_defined(values: np.ndarray) -> float:
    """pycocotools' averaging: the mean of the entries that are not ``-1``, else ``-1``."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def _area_index(cocoeval: COCOeval, area: str) -> int:
    labels = list(cocoeval.params.areaRngLbl)
    if area not in labels:
        raise ValueError(f"unknown area range {area!r}; known: {labels}")
    return labels.index(area)


def _iou_index(cocoeval: COCOeval, iou_threshold: float) -> int:
    thresholds = np.asarray(cocoeval.params.iouThrs)
    index = int(np.argmin(np.abs(thresholds - iou_threshold)))
    if not np.isclose(thresholds[index], iou_threshold):
        raise ValueError(f"IoU {iou_threshold} is not one of {thresholds.round(2).tolist()}")
    return index


def _precision(cocoeval: COCOeval) -> np.ndarray:
    if not cocoeval.eval:
        raise ValueError("the COCOeval has not been accumulated")
    return cocoeval.eval["precision"]


def ap_per_iou(cocoeval: COCOeval) -> dict[str, float]:
    """AP at each IoU threshold: ``{"AP50": .., "AP55": .., ..., "AP95": ..}``.

    Area ``all`` and the largest max-detections (100 by default), averaged over recall
    thresholds and categories like ``summarize``, so ``AP50``/``AP75`` equal ``stats[1]``/
    ``stats[2]``.
    """
    precision = _precision(cocoeval)
    area = _area_index(cocoeval, "all")
    return {
        f"AP{int(round(float(iou) * 100))}": _mean_defined(precision[t, :, :, area, -1])
        for t, iou in enumerate(cocoeval.params.iouThrs)
    }


def ap_per_category(cocoeval: COCOeval) -> dict[int, float]:
    """Category id -> AP@[0.50:0.95] (area ``all``, largest max-detections).

    Categories without ground truth are left out.
    """
    precision = _precision(cocoeval)
    area = _area_index(cocoeval, "all")
    per_category = {}
    for k, category_id in enumerate(cocoeval.params.catIds):
        ap = _mean_defined(precision[:, :, k, area, -1])
        if ap > -1:
            per_category[int(category_id)] = ap
    return per_category


def precision_recall_curves(
    cocoeval: COCOeval, iou_threshold: float = 0.5, area: str = "all"
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Category id -> ``(recall, precision)`` arrays at one IoU threshold and area range.

    ``recall`` is pycocotools' 101 recall thresholds (0, 0.01, .., 1) and ``precision`` the
    interpolated precision there (the running maximum from the right), ``0`` at recall levels
    the detections never reach. Largest max-detections. Categories without ground truth in
    the area range are left out. Needs a per-category evaluation (``useCats=1``).
    """
    if not cocoeval.params.useCats:
        raise ValueError("precision-recall curves per category need useCats=1")
    precision = _precision(cocoeval)
    t = _iou_index(cocoeval, iou_threshold)
    a = _area_index(cocoeval, area)
    recall = np.asarray(cocoeval.params.recThrs, dtype=float)
    curves = {}
    for k, category_id in enumerate(cocoeval.params.catIds):
        values = precision[t, :, k, a, -1]
        if np.any(values > -1):
            curves[int(category_id)] = (recall.copy(), values.astype(float).copy())
    return curves
