"""What a run reports about its detections: the COCO numbers, AP at a few IoU thresholds and,
for a run judged by the VOC07 protocol, VOC mAP.

``metric`` names the protocol a run is judged by (``TrainConfig.metric``, ``workbench evaluate
--metric``):

- ``"coco"``: the twelve COCO numbers (``AP`` .. ``ARl``, :mod:`workbench.evaluation.coco`)
  plus ``AP60``, ``AP70``, ``AP80`` and ``AP90`` (``AP50`` is already one of the twelve): AP at
  one IoU threshold, area ``all``, 100 detections, averaged over categories as pycocotools'
  ``summarize`` averages (:func:`workbench.evaluation.coco.ap_per_iou`). Judged by ``AP``.
- ``"voc07"``: all of the above, plus at IoU 0.5 ``voc07_mAP`` (the VOC2007 11-point mAP),
  ``voc_allpoint_mAP`` (the area under the precision envelope, VOC2010 and later) and
  ``voc07_AP/<class>`` per class (``None`` for a class without non-difficult ground truth).
  Judged by ``voc07_mAP``, as the RefineDet and uncertainty-rescaling papers report on VOC.

The VOC numbers are computed from the same COCO ground truth and results entries that
pycocotools sees: crowd boxes (``iscrowd: 1``, which is how datasets mark VOC's ``difficult``
objects) are VOC's difficult boxes, and COCO's ``[x, y, width, height]`` becomes ``xyxy`` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from workbench.errors import ConfigError
from workbench.evaluation.coco import CocoEvaluation, evaluate_coco, run_cocoeval, stats_to_metrics
from workbench.evaluation.coco_files import load_coco_gt, load_results
from workbench.evaluation.voc import VocResult, voc_map

#: The protocols a run can be judged by, and the key of the number that judges it.
JUDGED_BY = {"coco": "AP", "voc07": "voc07_mAP"}
METRICS = tuple(JUDGED_BY)
#: IoU thresholds (in percent) whose AP is reported besides the COCO numbers.
REPORTED_IOUS = (50, 60, 70, 80, 90)


def check_metric(metric: str) -> str:
    """``metric`` when it is known; a ``ConfigError`` naming the known ones otherwise."""
    if metric not in JUDGED_BY:
        raise ConfigError(f"unknown evaluation metric {metric!r}: use {' or '.join(METRICS)}")
    return metric


def judged_key(metric: str) -> str:
    """The metrics key a run with ``metric`` is judged by (and its ``best`` checkpoint chosen by)."""
    return JUDGED_BY[check_metric(metric)]


def coco_headline(evaluation: CocoEvaluation) -> dict[str, float]:
    """The twelve COCO numbers followed by ``AP60`` .. ``AP90`` (see the module docstring)."""
    per_iou = evaluation.ap_per_iou()
    metrics = dict(evaluation.metrics)
    for iou in REPORTED_IOUS:
        metrics.setdefault(f"AP{iou}", per_iou[f"AP{iou}"])
    return metrics


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def voc_from_coco(
    coco_gt: COCO, results: Sequence[dict], *, use_07_metric: bool = True, iou_threshold: float = 0.5
) -> VocResult:
    """VOC AP per class of COCO results entries against a COCO ground truth.

    Every image of the ground truth takes part (one without results has no detections). Labels
    are the ground truth's category ids in increasing order; results are keyed by category
    name (by label when two categories share a name). Crowd boxes are difficult boxes.
    """
    category_ids = sorted(coco_gt.getCatIds())
    label_of = {cid: k + 1 for k, cid in enumerate(category_ids)}
    names = [str(coco_gt.cats[cid].get("name", cid)) for cid in category_ids]
    classes: int | list[str] = names if len(set(names)) == len(names) else len(names)
    image_ids = sorted(coco_gt.getImgIds())
    by_image: dict[int, list[dict]] = {i: [] for i in image_ids}
    for entry in results:
        by_image.setdefault(int(entry["image_id"]), []).append(entry)
    unknown = sorted(set(by_image) - set(image_ids))
    if unknown:
        raise ValueError(f"results for image ids not in the ground truth: {unknown[:10]}")
    detections, ground_truths = [], []
    for image_id in image_ids:
        entries = by_image[image_id]
        detections.append({
            "boxes": np.array([_xyxy(e["bbox"]) for e in entries], dtype=float).reshape(-1, 4),
            "scores": np.array([float(e["score"]) for e in entries], dtype=float),
            "labels": np.array([label_of[int(e["category_id"])] for e in entries], dtype=np.int64),
        })
        anns = coco_gt.imgToAnns.get(image_id, [])
        ground_truths.append({
            "boxes": np.array([_xyxy(a["bbox"]) for a in anns], dtype=float).reshape(-1, 4),
            "labels": np.array([label_of[int(a["category_id"])] for a in anns], dtype=np.int64),
            "difficult": np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        })
    return voc_map(detections, ground_truths, classes, iou_threshold=iou_threshold, use_07_metric=use_07_metric)


def _clean(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def voc_metrics(coco_gt: COCO, results: Sequence[dict]) -> dict[str, float | None]:
    """``voc07_mAP``, ``voc_allpoint_mAP`` and ``voc07_AP/<class>`` at IoU 0.5."""
    eleven = voc_from_coco(coco_gt, results, use_07_metric=True)
    all_points = voc_from_coco(coco_gt, results, use_07_metric=False)
    metrics: dict[str, float | None] = {"voc07_mAP": _clean(eleven.mAP), "voc_allpoint_mAP": _clean(all_points.mAP)}
    metrics.update({f"voc07_AP/{name}": _clean(r.ap) for name, r in eleven.per_class.items()})
    return metrics


def metrics_of_evaluation(evaluation: CocoEvaluation, metric: str = "coco") -> dict[str, Any]:
    """Everything ``metric`` reports (module docstring) from a finished COCO evaluation; the
    VOC numbers use the same ground truth and results entries."""
    check_metric(metric)
    metrics: dict[str, Any] = coco_headline(evaluation)
    if metric == "voc07":
        cocoeval = evaluation.cocoeval
        metrics.update(voc_metrics(cocoeval.cocoGt, cocoeval.cocoDt.dataset.get("annotations", [])))
    return metrics


def evaluate_detections(
    coco_gt: COCO, results: list[dict], metric: str = "coco", *, source: str = "results", verbose: bool = False
) -> tuple[CocoEvaluation, dict[str, Any]]:
    """Check and evaluate COCO results entries: the ``CocoEvaluation`` and its metrics dict."""
    check_metric(metric)
    evaluation = evaluate_coco(coco_gt, results, verbose=verbose, source=source)
    return evaluation, metrics_of_evaluation(evaluation, metric)


def evaluate_files(gt: Path, pred: Path, metric: str = "coco", *, verbose: bool = False) -> dict[str, Any]:
    """:func:`evaluate_detections` of a results JSON file against a ground-truth JSON file
    (what ``workbench evaluate --gt --pred [--metric]`` prints). Raises ``DatasetError`` /
    ``PredictionFileError`` naming the bad file."""
    check_metric(metric)
    coco_gt = load_coco_gt(gt, verbose=verbose)
    results = load_results(pred, coco_gt)
    cocoeval = run_cocoeval(coco_gt, results, verbose=verbose)
    evaluation = CocoEvaluation(cocoeval, stats_to_metrics(cocoeval.stats))
    return metrics_of_evaluation(evaluation, metric)


__all__ = [
    "JUDGED_BY", "evaluate_files", "METRICS", "REPORTED_IOUS", "check_metric", "coco_headline", "evaluate_detections",
    "judged_key", "metrics_of_evaluation", "voc_from_coco", "voc_metrics",
]
