"""COCO metrics: agreement with pycocotools run directly, and the views into COCOeval."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from coco_synthetic import make_gt, make_predictions, pycocotools_stats, write_json
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.errors import PredictionFileError
from workbench.evaluation import coco
from workbench.evaluation.coco_files import coco_gt_from_dict

EXPECTED_KEYS = [
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
]


def _perfect_predictions(gt: dict) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": list(a["bbox"]),
            "score": 0.9,
        }
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_equals_pycocotools_on_the_same_files(tmp_path, seed):
    gt = make_gt(seed)
    gt_file = write_json(tmp_path / "gt.json", gt)
    pred_file = write_json(tmp_path / "pred.json", make_predictions(gt, seed))
    metrics = coco.evaluate_coco_files(gt_file, pred_file)
    stats = pycocotools_stats(gt_file, pred_file)
    assert list(metrics) == EXPECTED_KEYS
    assert [metrics[k] for k in EXPECTED_KEYS] == [float(s) for s in stats]
    assert 0.0 < metrics["AP"] < 1.0  # the data exercises real matching, not a trivial case


def test_library_call_equals_file_call(coco_files, gt_dict):
    gt_file, pred_file = coco_files
    results = json.loads(pred_file.read_text())
    assert coco.coco_metrics(coco_gt_from_dict(gt_dict), results) == coco.evaluate_coco_files(
        gt_file, pred_file
    )


def test_metric_names_are_the_twelve_keys():
    assert list(coco.METRIC_NAMES) == EXPECTED_KEYS


def test_perfect_predictions_score_one(gt_dict):
    metrics = coco.coco_metrics(coco_gt_from_dict(gt_dict), _perfect_predictions(gt_dict))
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)
    assert metrics["APs"] == pytest.approx(1.0)


def test_empty_predictions_give_zeros_not_a_crash(tmp_path, gt_dict):
    gt_file = write_json(tmp_path / "gt.json", gt_dict)
    pred_file = write_json(tmp_path / "pred.json", [])
    metrics = coco.evaluate_coco_files(gt_file, pred_file)
    assert metrics == {k: 0.0 for k in EXPECTED_KEYS}
    assert coco.coco_metrics(coco_gt_from_dict(gt_dict), []) == metrics


def test_area_range_without_ground_truth_is_minus_one_like_pycocotools(tmp_path, gt_dict):
    gt = copy.deepcopy(gt_dict)
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] >= 32**2]
    gt_file = write_json(tmp_path / "gt.json", gt)
    pred_file = write_json(tmp_path / "pred.json", make_predictions(gt, 3))
    metrics = coco.evaluate_coco_files(gt_file, pred_file)
    assert metrics["APs"] == -1.0 and metrics["ARs"] == -1.0
    assert list(metrics.values()) == [float(s) for s in pycocotools_stats(gt_file, pred_file)]


def test_missing_area_and_iscrowd_get_coco_defaults(tmp_path, gt_dict):
    gt = copy.deepcopy(gt_dict)
    gt["annotations"] = [a for a in gt["annotations"] if not a["iscrowd"]]
    explicit = copy.deepcopy(gt)
    for a in explicit["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    for a in gt["annotations"]:
        del a["area"], a["iscrowd"]
    predictions = make_predictions(explicit, 4)
    ours = coco.evaluate_coco_files(
        write_json(tmp_path / "gt.json", gt), write_json(tmp_path / "p.json", predictions)
    )
    direct = pycocotools_stats(write_json(tmp_path / "gt2.json", explicit), tmp_path / "p.json")
    assert list(ours.values()) == [float(s) for s in direct]


def test_pycocotools_prints_are_silent_unless_verbose(capsys, gt_dict):
    coco_gt = coco_gt_from_dict(gt_dict)
    predictions = make_predictions(gt_dict)
    coco.coco_metrics(coco_gt, predictions)
    assert capsys.readouterr().out == ""
    coco.coco_metrics(coco_gt, predictions, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_caller_results_and_ground_truth_are_not_modified(gt_dict):
    predictions = make_predictions(gt_dict)
    before_pred, before_gt = copy.deepcopy(predictions), copy.deepcopy(gt_dict)
    coco.coco_metrics(coco_gt_from_dict(gt_dict), predictions)
    assert predictions == before_pred  # loadRes would add 'area', 'id', 'segmentation'
    assert gt_dict == before_gt


def test_bad_results_passed_in_memory_raise_prediction_file_error(gt_dict):
    bad = make_predictions(gt_dict)
    bad[1]["score"] = float("nan")
    with pytest.raises(PredictionFileError, match=r"index 1: 'score' is not finite"):
        coco.coco_metrics(coco_gt_from_dict(gt_dict), bad)


def test_ap_per_iou_keys_and_agreement_with_stats(gt_dict):
    evaluation = coco.evaluate_coco(coco_gt_from_dict(gt_dict), make_predictions(gt_dict))
    per_iou = coco.ap_per_iou(evaluation.cocoeval)
    assert list(per_iou) == [f"AP{v}" for v in range(50, 100, 5)]
    assert per_iou["AP50"] == evaluation.cocoeval.stats[1]
    assert per_iou["AP75"] == evaluation.cocoeval.stats[2]
    # every class has ground truth, so the mean over thresholds is the overall AP
    assert np.mean(list(per_iou.values())) == pytest.approx(evaluation.metrics["AP"], abs=1e-12)
    values = list(per_iou.values())
    assert values == sorted(values, reverse=True)  # a stricter IoU never raises AP
    assert evaluation.ap_per_iou() == per_iou


def test_ap_per_category_averages_to_ap_and_isolates_a_perfect_class(gt_dict):
    predictions = [p for p in make_predictions(gt_dict) if p["category_id"] != 5]
    predictions += [p for p in _perfect_predictions(gt_dict) if p["category_id"] == 5]
    evaluation = coco.evaluate_coco(coco_gt_from_dict(gt_dict), predictions)
    per_category = coco.ap_per_category(evaluation.cocoeval)
    assert set(per_category) == {1, 2, 5}
    assert per_category[5] == pytest.approx(1.0)
    assert per_category[1] < 1.0
    assert np.mean(list(per_category.values())) == pytest.approx(
        evaluation.metrics["AP"], abs=1e-12
    )


def _single_class_gt() -> dict:
    boxes = [[10.0, 10.0, 50.0, 50.0], [200.0, 200.0, 60.0, 60.0]]
    return {
        "images": [{"id": 1, "width": 400, "height": 400}],
        "categories": [{"id": 7, "name": "a"}, {"id": 8, "name": "b"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": b,
                "area": b[2] * b[3],
                "iscrowd": 0,
            }
            for i, b in enumerate(boxes)
        ],
    }


def test_precision_recall_curve_of_a_hand_worked_case():
    # Two objects of class 7; detections by score: TP (0.9), FP (0.8), TP (0.7).
    # Points (recall, precision): (1/2, 1), (1/2, 1/2), (1, 2/3).
    # Interpolated precision: 1 for recall <= 0.5, 2/3 for 0.5 < recall <= 1.
    # Recall thresholds 0.00 .. 0.50 are 51 levels, 0.51 .. 1.00 are 50 levels.
    predictions = [
        {"image_id": 1, "category_id": 7, "bbox": [10.0, 10.0, 50.0, 50.0], "score": 0.9},
        {"image_id": 1, "category_id": 7, "bbox": [300.0, 10.0, 40.0, 40.0], "score": 0.8},
        {"image_id": 1, "category_id": 7, "bbox": [200.0, 200.0, 60.0, 60.0], "score": 0.7},
    ]
    evaluation = coco.evaluate_coco(coco_gt_from_dict(_single_class_gt()), predictions)
    curves = coco.precision_recall_curves(evaluation.cocoeval)
    assert list(curves) == [7]  # category 8 has no ground truth
    recall, precision = curves[7]
    np.testing.assert_allclose(recall, np.linspace(0, 1, 101))
    expected = np.array([1.0] * 51 + [2 / 3] * 50)
    np.testing.assert_allclose(precision, expected)
    assert evaluation.metrics["AP50"] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)


def test_precision_recall_curves_are_monotone_and_average_to_ap50(gt_dict):
    evaluation = coco.evaluate_coco(coco_gt_from_dict(gt_dict), make_predictions(gt_dict))
    curves = evaluation.precision_recall_curves()
    assert set(curves) == {1, 2, 5}
    for recall, precision in curves.values():
        assert recall.shape == precision.shape == (101,)
        assert np.all(np.diff(precision) <= 0)
    mean = np.mean([precision for _, precision in curves.values()])
    assert mean == pytest.approx(evaluation.metrics["AP50"], abs=1e-12)
    at_75 = coco.precision_recall_curves(evaluation.cocoeval, iou_threshold=0.75)
    assert np.mean([p for _, p in at_75.values()]) == pytest.approx(
        evaluation.metrics["AP75"], abs=1e-12
    )


def test_precision_recall_curves_reject_an_unknown_iou_or_area(gt_dict):
    evaluation = coco.evaluate_coco(coco_gt_from_dict(gt_dict), make_predictions(gt_dict))
    with pytest.raises(ValueError, match="IoU 0.52"):
        coco.precision_recall_curves(evaluation.cocoeval, iou_threshold=0.52)
    with pytest.raises(ValueError, match="area range"):
        coco.precision_recall_curves(evaluation.cocoeval, area="huge")


def test_evaluation_views_equal_pycocotools_arrays(coco_files):
    gt_file, pred_file = coco_files
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        direct = COCOeval(coco_gt, coco_gt.loadRes(str(pred_file)), iouType="bbox")
        direct.evaluate()
        direct.accumulate()
    ours = coco.evaluate_coco(
        coco_gt_from_dict(json.loads(gt_file.read_text())), json.loads(pred_file.read_text())
    )
    np.testing.assert_array_equal(ours.cocoeval.eval["precision"], direct.eval["precision"])
    np.testing.assert_array_equal(ours.cocoeval.eval["recall"], direct.eval["recall"])
