"""What a run reports: AP per IoU against pycocotools' own precision array, VOC mAP from COCO
entries against hand-worked values."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from coco_synthetic import make_predictions, write_json
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.errors import ConfigError
from workbench.evaluation import coco_gt_from_dict
from workbench.evaluation.detection import (
    check_metric,
    evaluate_detections,
    evaluate_files,
    judged_key,
    voc_from_coco,
    voc_metrics,
)


def _pycocotools_precision(gt_file, pred_file) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools run directly: ``eval["precision"]`` and its IoU thresholds."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        cocoeval = COCOeval(coco_gt, coco_gt.loadRes(str(pred_file)), iouType="bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
    return cocoeval.eval["precision"], np.asarray(cocoeval.params.iouThrs)


def test_ap_per_iou_equals_pycocotools_precision_array(tmp_path, gt_dict):
    gt_file = write_json(tmp_path / "gt.json", gt_dict)
    pred_file = write_json(tmp_path / "pred.json", make_predictions(gt_dict, 3))
    precision, ious = _pycocotools_precision(gt_file, pred_file)
    metrics = evaluate_files(gt_file, pred_file)
    for iou in (0.5, 0.6, 0.7, 0.8, 0.9):
        t = int(np.argmin(np.abs(ious - iou)))
        values = precision[t, :, :, 0, -1]  # area "all", maxDets 100
        expected = float(np.mean(values[values > -1]))
        assert metrics[f"AP{round(iou * 100)}"] == pytest.approx(expected, abs=1e-12), iou
    # they differ from one another: the test would notice a wrong slice
    assert metrics["AP50"] > metrics["AP70"] > metrics["AP90"]


def _gt(annotations, categories=((1, "cat"), (2, "dog"))) -> COCO:
    return coco_gt_from_dict({
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"},
                   {"id": 2, "width": 100, "height": 100, "file_name": "b.png"}],
        "annotations": [
            {"id": i + 1, "image_id": img, "category_id": cat, "bbox": list(box), "iscrowd": crowd}
            for i, (img, cat, box, crowd) in enumerate(annotations)
        ],
        "categories": [{"id": c, "name": n} for c, n in categories],
    })


def _det(image_id, category_id, box, score) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": list(box), "score": score}


def test_voc_from_coco_entries_matches_a_hand_worked_curve():
    # two cats (one per image) and a difficult (crowd) cat; no dog in the ground truth
    gt = _gt([(1, 1, (10, 10, 20, 20), 0), (2, 1, (50, 50, 30, 30), 0), (2, 1, (0, 0, 10, 10), 1)])
    results = [
        _det(1, 1, (10, 10, 20, 20), 0.9),  # TP
        _det(1, 1, (60, 60, 20, 20), 0.8),  # FP: no overlap
        _det(2, 1, (0, 0, 10, 10), 0.75),  # on the difficult box: ignored
        _det(2, 1, (51, 51, 30, 30), 0.7),  # TP (IoU 0.88)
        _det(2, 2, (51, 51, 30, 30), 0.6),  # a dog: its class has no ground truth
    ]
    # cat curve (ignored entry left out): recall 0.5, 0.5, 1; precision 1, 1/2, 2/3
    eleven = voc_from_coco(gt, results, use_07_metric=True)
    assert eleven.per_class["cat"].ap == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    assert np.isnan(eleven.per_class["dog"].ap)
    assert eleven.mAP == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)  # the dog is left out of the mean
    all_points = voc_from_coco(gt, results, use_07_metric=False)
    assert all_points.mAP == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    metrics = voc_metrics(gt, results)
    assert metrics["voc07_mAP"] == pytest.approx(eleven.mAP)
    assert metrics["voc_allpoint_mAP"] == pytest.approx(all_points.mAP)
    assert metrics["voc07_AP/dog"] is None


def test_evaluate_detections_reports_voc_only_for_voc07():
    gt = _gt([(1, 1, (10, 10, 20, 20), 0), (2, 2, (50, 50, 30, 30), 0)])
    results = [_det(1, 1, (10, 10, 20, 20), 0.9), _det(2, 2, (50, 50, 30, 30), 0.8)]
    _, coco = evaluate_detections(gt, [dict(r) for r in results], "coco")
    _, voc = evaluate_detections(gt, [dict(r) for r in results], "voc07")
    assert "voc07_mAP" not in coco and {"AP", "AP50", "AP60", "AP70", "AP80", "AP90"} <= set(coco)
    assert voc["voc07_mAP"] == 1.0 and voc["voc_allpoint_mAP"] == 1.0
    assert {k: voc[k] for k in coco} == coco
    assert judged_key("coco") == "AP" and judged_key("voc07") == "voc07_mAP"
    with pytest.raises(ConfigError, match="coco or voc07"):
        check_metric("voc12")
