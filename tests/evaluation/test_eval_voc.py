"""VOC AP and mAP on hand-worked cases (the arithmetic is written out in each test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.evaluation.voc import voc_ap, voc_map
from workbench.structures import Detections


def _dets(boxes, scores, labels):
    return {
        "boxes": np.array(boxes, dtype=float).reshape(-1, 4),
        "scores": scores,
        "labels": labels,
    }


def _gts(boxes, labels, difficult=None):
    gt = {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": labels}
    if difficult is not None:
        gt["difficult"] = difficult
    return gt


# Three objects in two images, five detections whose order by score is TP FP TP FP TP:
#   0.9 image 0 [0,0,10,10]    TP (object a, IoU 1)
#   0.8 image 0 [0,0,10,10]    FP (a again: a duplicate)
#   0.7 image 1 [0,0,20,19]    TP (object c, IoU 380/400 = 0.95)
#   0.6 image 1 [50,50,60,60]  FP (touches nothing)
#   0.5 image 0 [20,20,30,31]  TP (object b, IoU 100/110 = 0.91)
# cumTP 1 1 2 2 3, cumFP 0 1 1 2 2
# recall    1/3 1/3 2/3 2/3 1
# precision 1   1/2 2/3 1/2 3/5
THREE_GT = [
    _gts([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1]),
    _gts([[0, 0, 20, 20]], [1]),
]
FIVE_DETS = [
    _dets([[20, 20, 30, 31], [0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9, 0.8], [1, 1, 1]),
    _dets([[50, 50, 60, 60], [0, 0, 20, 19]], [0.6, 0.7], [1, 1]),
]
RECALL = [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0]
PRECISION = [1.0, 1 / 2, 2 / 3, 1 / 2, 3 / 5]
# 11-point: levels 0, .1, .2, .3 -> max precision at recall >= t is 1;
#           levels .4, .5, .6 -> max(2/3, 1/2, 3/5) = 2/3; levels .7, .8, .9, 1 -> 3/5.
AP_11_POINT = (4 * 1 + 3 * (2 / 3) + 4 * (3 / 5)) / 11  # = 8.4 / 11
# all-point: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], 3/5 on (2/3, 1].
AP_ALL_POINT = (1 + 2 / 3 + 3 / 5) / 3  # = 34 / 45


def test_curve_of_three_objects_and_five_detections():
    result = voc_map(FIVE_DETS, THREE_GT, 1).per_class[1]
    np.testing.assert_allclose(result.recall, RECALL)
    np.testing.assert_allclose(result.precision, PRECISION)
    assert result.tp.tolist() == [True, False, True, False, True]
    assert (result.num_gt, result.num_detections) == (3, 5)


def test_eleven_point_and_all_point_ap_by_hand():
    assert voc_ap(RECALL, PRECISION, use_07_metric=True) == pytest.approx(AP_11_POINT)
    assert voc_ap(RECALL, PRECISION, use_07_metric=False) == pytest.approx(34 / 45)
    assert voc_map(FIVE_DETS, THREE_GT, 1).mAP == pytest.approx(AP_11_POINT)
    assert voc_map(FIVE_DETS, THREE_GT, 1, use_07_metric=False).mAP == pytest.approx(AP_ALL_POINT)


def test_recall_exactly_on_a_tenth_counts_for_that_level():
    # recall 0.2, 0.4, 0.6 at precision 1: levels 0 .. 0.6 (seven of them) score 1,
    # levels 0.7 .. 1 score 0 -> 7/11. (Thresholds from np.arange(0, 1.1, 0.1) would put
    # the 0.6 level at 0.6000000000000001 and give 6/11.)
    assert voc_ap([1 / 5, 2 / 5, 3 / 5], [1.0, 1.0, 1.0], use_07_metric=True) == pytest.approx(
        7 / 11
    )
    # all-point: 0.6 of the recall axis at precision 1
    assert voc_ap([1 / 5, 2 / 5, 3 / 5], [1.0, 1.0, 1.0], use_07_metric=False) == pytest.approx(0.6)


def test_empty_curve_has_zero_ap():
    assert voc_ap([], [], use_07_metric=True) == 0.0
    assert voc_ap([], [], use_07_metric=False) == 0.0


def test_detections_on_a_difficult_box_are_neither_tp_nor_fp():
    # One normal object [0,0,10,10] and one difficult object [20,20,30,30].
    #   0.9 [50,50,60,60]  FP
    #   0.85 on the difficult box -> ignored
    #   0.8  on the difficult box again -> ignored (not a duplicate FP)
    #   0.7  on the normal box -> TP
    # counted: FP, TP -> recall 0, 1; precision 0, 1/2; one object counts.
    # 11-point: every level sees precision 1/2 at recall 1 -> 0.5; all-point: 1 * 1/2 = 0.5.
    gts = [_gts([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], difficult=[False, True])]
    dets = [
        _dets(
            [[50, 50, 60, 60], [20, 20, 30, 30], [21, 20, 30, 30], [0, 0, 10, 10]],
            [0.9, 0.85, 0.8, 0.7],
            [1, 1, 1, 1],
        )
    ]
    result = voc_map(dets, gts, 1).per_class[1]
    assert (result.num_gt, result.num_detections) == (1, 4)
    np.testing.assert_allclose(result.recall, [0.0, 1.0])
    np.testing.assert_allclose(result.precision, [0.0, 0.5])
    assert result.ap == pytest.approx(0.5)
    assert voc_map(dets, gts, 1, use_07_metric=False).mAP == pytest.approx(0.5)
    # Without the difficult flag the same detections count FP, TP, FP (duplicate), TP
    # over two objects: all four enter the curve.
    normal = voc_map(dets, [_gts([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])], 1).per_class[1]
    assert normal.num_gt == 2
    assert normal.tp.tolist() == [False, True, False, True]


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    # class "cat" (label 1) is the three-object case; "dog" (label 2) has only a detection.
    dets = [dict(FIVE_DETS[0]), FIVE_DETS[1]]
    dets[0] = _dets(
        np.concatenate([FIVE_DETS[0]["boxes"], [[5, 5, 9, 9]]]),
        FIVE_DETS[0]["scores"] + [0.99],
        [1, 1, 1, 2],
    )
    result = voc_map(dets, THREE_GT, ["cat", "dog"])
    assert list(result.per_class) == ["cat", "dog"]
    assert math.isnan(result.per_class["dog"].ap)
    assert result.per_class["dog"].num_detections == 1
    assert result.mAP == pytest.approx(AP_11_POINT)
    assert result.as_metrics() == {
        "mAP": pytest.approx(AP_11_POINT),
        "AP/cat": pytest.approx(AP_11_POINT),
        "AP/dog": None,
    }


def test_greedy_matching_follows_the_devkit_not_the_best_free_box():
    # Objects A [0,0,10,10] and B [0,2,10,12]. Detection 0.9 [0,0,10,10] takes A.
    # Detection 0.8 [0,0.5,10,10.5]: IoU with A 95/105 = 0.90, with B 85/115 = 0.74;
    # its best box A is taken -> FP (COCO-style matching would give it B).
    # recall 1/2, 1/2; precision 1, 1/2 -> 11-point: levels 0 .. 0.5 score 1 -> 6/11.
    gts = [_gts([[0, 0, 10, 10], [0, 2, 10, 12]], [1, 1])]
    dets = [_dets([[0, 0, 10, 10], [0, 0.5, 10, 10.5]], [0.9, 0.8], [1, 1])]
    result = voc_map(dets, gts, 1)
    assert result.per_class[1].tp.tolist() == [True, False]
    assert result.mAP == pytest.approx(6 / 11)


def test_pixel_inclusive_iou_is_off_by_default():
    # GT [0,0,9,9], detection [0,0,9,4].
    # continuous: areas 81 and 36, intersection 36 -> IoU 0.444 < 0.5 -> FP -> AP 0;
    # inclusive pixels (+1): areas 100 and 50, intersection 50 -> IoU 0.5 >= 0.5 -> TP -> AP 1.
    gts = [_gts([[0, 0, 9, 9]], [1])]
    dets = [_dets([[0, 0, 9, 4]], [0.5], [1])]
    assert voc_map(dets, gts, 1).mAP == 0.0
    assert voc_map(dets, gts, 1, pixel_inclusive=True).mAP == pytest.approx(1.0)


def test_iou_threshold_is_a_parameter():
    # the 0.95-IoU detection of object c and the 0.91-IoU one of b fail at 0.92 / pass at 0.9
    strict = voc_map(FIVE_DETS, THREE_GT, 1, iou_threshold=0.92).per_class[1]
    assert strict.tp.tolist() == [True, False, True, False, False]


def test_tensor_detections_give_the_same_result_as_arrays():
    as_tensors = [
        Detections(
            torch.tensor(d["boxes"], dtype=torch.float32),
            torch.tensor(d["scores"]),
            torch.tensor(d["labels"]),
        )
        for d in FIVE_DETS
    ]
    gts = [{k: torch.as_tensor(v) for k, v in g.items()} for g in THREE_GT]
    assert voc_map(as_tensors, gts, 1).mAP == pytest.approx(AP_11_POINT)


def test_images_without_detections_or_objects_and_no_detections_at_all():
    gts = THREE_GT + [_gts(np.zeros((0, 4)), [])]
    dets = FIVE_DETS + [Detections.empty()]
    assert voc_map(dets, gts, 1).mAP == pytest.approx(AP_11_POINT)
    nothing = [Detections.empty() for _ in gts]
    assert voc_map(nothing, gts, 1).mAP == 0.0


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="labels must lie in 1..1"):
        voc_map([_dets([[0, 0, 1, 1]], [0.5], [2])], [_gts([[0, 0, 1, 1]], [1])], 1)
    with pytest.raises(ValueError, match="2 detection sets for 1 images"):
        voc_map(FIVE_DETS, THREE_GT[:1], 1)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        voc_map(
            [_dets([[0, 0, 1, 1]], [0.5], [1]) | {"boxes": np.zeros((1, 3))}], [_gts([], [])], 1
        )
    with pytest.raises(ValueError, match="difficult"):
        voc_map([Detections.empty()], [_gts([[0, 0, 1, 1]], [1], difficult=[True, False])], 1)


def test_equal_scores_keep_image_then_detection_order():
    # Both detections score 0.5: the miss in image 0 ranks before the hit in image 1.
    # counted: FP, TP -> precision 0, 1/2 at recall 0, 1 -> AP 1/2 (the reverse order gives 1).
    gts = [_gts(np.zeros((0, 4)), []), _gts([[0, 0, 10, 10]], [1])]
    dets = [_dets([[0, 0, 10, 10]], [0.5], [1]), _dets([[0, 0, 10, 10]], [0.5], [1])]
    result = voc_map(dets, gts, 1).per_class[1]
    assert result.tp.tolist() == [False, True]
    assert result.ap == pytest.approx(0.5)
