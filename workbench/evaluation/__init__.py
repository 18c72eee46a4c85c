"""Evaluation: COCO metrics (pycocotools), VOC mAP, AP per IoU, proposal recall.

Inside the workbench boxes are absolute ``xyxy``; COCO's ``[x, y, width, height]`` appears
only here (results entries, ``results.py``) and in ``workbench.data``.

Modules:

- ``coco``: the twelve COCO numbers, ``ap_per_iou``, ``ap_per_category``, per-class
  precision-recall curves, ``evaluate_coco_files`` (what ``workbench evaluate`` runs);
- ``coco_files``: reading and checking ground-truth and results files;
- ``detection``: what a run reports (the COCO numbers, AP at IoU 0.50/0.60/0.70/0.80/0.90 and,
  for runs judged by ``voc07``, VOC07 11-point and all-point mAP), ``evaluate_files`` (what
  ``workbench evaluate --gt --pred`` runs);
- ``recall``: class-agnostic proposal recall ``AR@100/300/1000``;
- ``proposals``: proposal analyses of a trained two-stage detector (recall, offsets of the
  highest / lowest objectness proposals); it runs models, so it is imported on its own
  (``from workbench.evaluation.proposals import ...``), not from this package;
- ``voc``: VOC07 11-point and all-point mAP;
- ``results``: detections -> COCO results entries.
"""

from workbench.evaluation.coco import (
    METRIC_NAMES,
    CocoEvaluation,
    ap_per_category,
    ap_per_iou,
    coco_metrics,
    evaluate_coco,
    evaluate_coco_files,
    precision_recall_curves,
)
from workbench.evaluation.coco_files import (
    coco_gt_from_dict,
    load_coco_gt,
    load_results,
    validate_results,
)
from workbench.evaluation.detection import (
    JUDGED_BY,
    REPORTED_IOUS,
    check_metric,
    evaluate_detections,
    evaluate_files,
    judged_key,
    metrics_of_evaluation,
    voc_metrics,
)
from workbench.evaluation.recall import proposal_recall
from workbench.evaluation.results import detections_to_coco_results, xyxy_to_xywh
from workbench.evaluation.voc import VocClassResult, VocResult, voc_ap, voc_map

__all__ = [
    "JUDGED_BY",
    "METRIC_NAMES",
    "REPORTED_IOUS",
    "CocoEvaluation",
    "VocClassResult",
    "VocResult",
    "ap_per_category",
    "ap_per_iou",
    "check_metric",
    "coco_gt_from_dict",
    "coco_metrics",
    "detections_to_coco_results",
    "evaluate_coco",
    "evaluate_coco_files",
    "evaluate_detections",
    "evaluate_files",
    "judged_key",
    "load_coco_gt",
    "load_results",
    "metrics_of_evaluation",
    "precision_recall_curves",
    "proposal_recall",
    "validate_results",
    "voc_ap",
    "voc_map",
    "voc_metrics",
    "xyxy_to_xywh",
]
