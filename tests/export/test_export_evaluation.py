"""The export's evaluation (pycocotools' matching written as FiftyOne's COCO evaluation writes it)
equals FiftyOne's own ``evaluate_detections`` label for label, on synthetic detections built to
hit every case: duplicates, wrong classes, crowd boxes matched by several detections, tied
scores, images without detections or without ground truth. In a private database (``conftest``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from export_support import synthetic_split

from workbench.evaluation.matching import ImageBoxes, match_detections
from workbench.export.fiftyone import GT_FIELD, evaluate_dataset, export_traces
from workbench.methods import DETECTIONS_VIEW

@pytest.fixture(scope="module", params=["ties", "distinct"])
def compared(request, fiftyone_db, tmp_path_factory):
    """The exported dataset with its own evaluation ``eval`` and FiftyOne's ``ref`` of the same
    predictions, with tied scores or distinct ones."""
    ties = request.param == "ties"
    data, traces = synthetic_split(tmp_path_factory.mktemp("eval_split"), ties=ties)
    dataset, summary = export_traces(traces, data, f"wb-eval-compare-{request.param}", views=(DETECTIONS_VIEW,))
    reference = evaluate_dataset(dataset, data.class_names, eval_key="ref")
    return dataset, summary, reference, ties


def _per_label(dataset, field: str, key: str) -> list:
    paths = [f"{field}.detections.{suffix}" for suffix in (key, f"{key}_id", f"{key}_iou")]
    return [list(zip(*(v or [] for v in values))) for values in zip(*dataset.values(paths))]


def _same(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for sample_ours, sample_theirs in zip(ours, theirs):
        assert len(sample_ours) == len(sample_theirs)
        for (outcome, match, iou), (ref_outcome, ref_match, ref_iou) in zip(sample_ours, sample_theirs):
            assert (outcome, match) == (ref_outcome, ref_match)
            assert (iou is None) == (ref_iou is None)
            assert iou is None or math.isclose(iou, ref_iou, rel_tol=1e-6, abs_tol=1e-9)


def test_every_detection_and_box_is_marked_as_fiftyone_marks_it(compared):
    dataset, summary, _, _ = compared
    assert summary.evaluated
    _same(_per_label(dataset, "predictions", "eval"), _per_label(dataset, "predictions", "ref"))
    _same(_per_label(dataset, GT_FIELD, "eval"), _per_label(dataset, GT_FIELD, "ref"))
    outcomes = {o for sample in _per_label(dataset, "predictions", "eval") for o, _, _ in sample}
    assert outcomes == {"tp", "fp"}
    crowd_matches = dataset.filter_labels(GT_FIELD, (fo_field("iscrowd") == True) & (fo_field("eval") == "tp"))  # noqa: E712
    assert crowd_matches.count(f"{GT_FIELD}.detections") > 0, "no crowd box was matched: the test data misses a case"


def fo_field(name: str):
    from fiftyone import ViewField

    return ViewField(name)


def test_per_sample_counts_equal_fiftyones(compared):
    dataset, _, _, _ = compared
    for suffix in ("tp", "fp", "fn"):
        assert dataset.values(f"eval_{suffix}") == dataset.values(f"ref_{suffix}")
    assert sum(dataset.values("eval_tp")) > 0 and sum(dataset.values("eval_fn")) > 0


def test_the_evaluation_is_registered_with_the_same_results(compared):
    """The same matches; the same precision-recall sweep where no two scores tie (FiftyOne's sweep
    ranks a true positive before a false positive of the same score, pycocotools keeps the
    detections' order)."""
    dataset, _, reference, ties = compared
    assert set(dataset.list_evaluations()) == {"eval", "ref"}
    info = dataset.get_evaluation_info("eval")
    assert info.config.method == "coco" and info.config.compute_mAP and info.config.pred_field == "predictions"
    results = dataset.load_evaluation_results("eval")
    assert results.classes.tolist() == reference.classes.tolist()
    assert 0.0 < results.mAP() < 1.0
    if not ties:
        assert math.isclose(results.mAP(), reference.mAP(), abs_tol=1e-9)
        np.testing.assert_allclose(results.precision, reference.precision, atol=1e-9)
        np.testing.assert_allclose(results.recall_sweep, reference.recall_sweep, atol=1e-9)
    assert sorted(map(str, results.ytrue)) == sorted(map(str, reference.ytrue))
    assert sorted(map(str, results.ypred)) == sorted(map(str, reference.ypred))
    # the App filters on the per-label outcome
    assert dataset.filter_labels("predictions", fo_field("eval") == "fp").count("predictions.detections") == sum(
        dataset.values("eval_fp"))


def test_matching_without_fiftyone_counts_crowd_matches_as_true_positives():
    gt = [ImageBoxes.of([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 1], crowd=[False, True])]
    det = [ImageBoxes.of([[0, 0, 10, 10], [0, 0, 10, 9], [21, 21, 30, 30], [22, 22, 31, 31], [50, 50, 60, 60]],
                         [1, 1, 1, 1, 2], scores=[0.9, 0.8, 0.7, 0.6, 0.5])]
    m = match_detections(gt, det, [1, 2]).images[0]
    assert m.det_gt.tolist() == [0, -1, 1, 1, -1]
    assert m.gt_det.tolist() == [0, 2]
    assert (m.tp, m.fp, m.fn) == (3, 2, 0)
    assert m.det_iou[0] == 1.0 and m.det_iou[2] == 1.0  # a crowd box: intersection over the detection's area

