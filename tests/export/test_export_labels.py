"""The pure parts of the FiftyOne export: box conversion, per-box extras, suppression links,
heatmap values (no database needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench import records as R
from workbench.export.fiftyone import (
    ExportPlan,
    HeatmapRange,
    box_attributes,
    box_documents,
    default_dataset_name,
    exported_suppressed_count,
    heatmap_pixels,
    heatmap_ranges,
    per_box_attributes,
    prediction_positions,
    relative_xywh,
    suppressed_documents,
)
from workbench.inspection import ImageTrace
from workbench.methods import DETECTIONS_VIEW, PROPOSALS_VIEW, TWO_STAGE_VIEWS, RecordView


def test_relative_xywh_divides_by_width_and_height():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 200.0, 100.0]])
    out = relative_xywh(boxes, (100, 200))  # height 100, width 200
    np.testing.assert_allclose(out, [[0.05, 0.2, 0.1, 0.4], [0.0, 0.0, 1.0, 1.0]])
    assert relative_xywh(torch.zeros((0, 4)), (5, 5)).shape == (0, 4)


def test_per_box_extras_become_numbers_lists_and_means():
    fields = {
        "boxes": torch.zeros(2, 4), "scores": torch.tensor([0.9, 0.1]),
        "sigma": torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]]),
        "iou_pred": torch.tensor([0.5, 0.25]), "level": torch.tensor([3, 4]),
        "elsewhere": torch.zeros(5),  # not one value per box: left out
    }
    attrs = per_box_attributes(fields, 2)
    assert attrs == {
        "sigma": [[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]], "sigma_mean": [2.5, 2.0],
        "iou_pred": [0.5, 0.25], "level": [3, 4],
    }


def _trace_with_cut() -> ImageTrace:
    """Final NMS over 6 boxes of one class: kept 0, 2, 4 (in that order); detections keep only
    the first two (a top-2 cut), so box 4 is kept but not exported."""
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30], [20, 20, 30, 31],
                          [50, 50, 60, 60], [50, 50, 60, 61]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    nms = {
        "boxes": boxes, "scores": scores, "idxs": torch.ones(6, dtype=torch.int64),
        "keep": torch.tensor([0, 2, 4]), "suppressed_by": torch.tensor([-1, 0, -1, 2, -1, 4]),
        "suppressor_iou": torch.tensor([float("nan"), 0.91, float("nan"), 0.91, float("nan"), 0.91]),
        "iou_threshold": torch.tensor(0.5, dtype=torch.float64),
    }
    detections = {"boxes": boxes[[0, 2]], "scores": scores[[0, 2]], "labels": torch.tensor([1, 1])}
    proposals = {"boxes": boxes, "scores": scores, "sigma": torch.ones(6, 4)}
    return ImageTrace(5, "5.png", (100, 100), {"rcnn_nms": nms, "detections": detections, "rpn_proposals": proposals})


def test_suppressed_boxes_link_to_exported_predictions_only():
    trace = _trace_with_cut()
    assert prediction_positions(trace["rcnn_nms"], trace["detections"]).tolist() == [0, -1, 1, -1, -1, -1]
    docs = suppressed_documents(trace, ["circle"], ["id-a", "id-b"])
    assert [d["suppressed_by"] for d in docs] == ["id-a", "id-b"]  # box 5 (suppressed by box 4) left out
    assert [d["confidence"] for d in docs] == pytest.approx([0.8, 0.6])
    assert [d["label"] for d in docs] == ["circle", "circle"]
    assert docs[0]["suppressor_iou"] == pytest.approx(0.91)
    assert docs[0]["bounding_box"] == pytest.approx([0.0, 0.0, 0.1, 0.11])
    assert exported_suppressed_count(trace) == 2


def test_detections_that_are_not_the_kept_boxes_are_refused():
    trace = _trace_with_cut()
    trace["detections"]["scores"] = torch.tensor([0.9, 0.5])
    with pytest.raises(WorkbenchError, match="rcnn_nms"):
        suppressed_documents(trace, ["circle"], ["a", "b"])


def test_proposals_are_cut_to_the_first_k_with_their_extras():
    docs = box_documents(_trace_with_cut(), PROPOSALS_VIEW, ["circle"], max_boxes=4)
    assert len(docs) == 4 and {d["label"] for d in docs} == {"proposal"}
    assert [d["confidence"] for d in docs] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert docs[0]["sigma"] == [1.0] * 4 and docs[0]["sigma_mean"] == 1.0
    assert len({d["_id"] for d in docs}) == 4
    assert len(box_documents(_trace_with_cut(), PROPOSALS_VIEW, ["circle"])) == 6  # no limit: all


def test_boxes_with_labels_take_class_names_and_declared_attributes_their_names():
    trace = _trace_with_cut()
    trace["detections"]["spread"] = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    trace["detections"]["iou_pred"] = torch.tensor([0.5, 0.25])
    declared = (RecordView(R.DETECTIONS, "attribute", field="predicted_iou", value="iou_pred", label="predicted IoU"),)
    docs = box_documents(trace, DETECTIONS_VIEW, ["circle"], declared)
    assert [d["label"] for d in docs] == ["circle", "circle"]
    assert [d["predicted_iou"] for d in docs] == [0.5, 0.25] and "iou_pred" not in docs[0]
    assert [d["spread_mean"] for d in docs] == [2.0, 2.0]  # undeclared extras keep their names
    assert box_attributes(trace["detections"], 2, declared)["predicted_iou"] == [0.5, 0.25]
    assert box_documents(ImageTrace(1, "1.png", (5, 5), {}), DETECTIONS_VIEW, ["circle"]) == []


def test_export_plan_sorts_views_and_refuses_clashing_fields():
    heat = RecordView(R.UNCERTAINTY_MAP, "heatmap", field="u", value="v", label="u")
    figure_only = RecordView(R.UNCERTAINTY_MAP, "heatmap", field="u2", value="v", label="u", app=False)
    plan = ExportPlan.of((*TWO_STAGE_VIEWS, heat, figure_only))
    assert plan.kept == DETECTIONS_VIEW and plan.heatmaps == (heat,)
    assert plan.box_fields() == ["predictions", "proposals", "suppressed"]
    with pytest.raises(WorkbenchError, match="predictions"):
        ExportPlan.of((DETECTIONS_VIEW, RecordView(R.PROPOSALS, "boxes", field="predictions", label="x")))
    with pytest.raises(WorkbenchError, match="ground_truth"):
        ExportPlan.of((RecordView(R.PROPOSALS, "boxes", field="ground_truth", label="x"),))


def test_heatmaps_come_from_the_declared_field_spread_over_the_image():
    view = RecordView("some_map", "heatmap", field="spread", value="sigma_mean", label="mean sigma",
                      higher="more uncertain")
    small = torch.tensor([[2.0, -1.0], [0.0, 4.0]])
    trace = ImageTrace(1, "1.png", (4, 6), {"some_map": {"sigma_mean": small, "other": torch.zeros(2, 2),
                                                         R.MAP_CELL_SIZE: torch.tensor([2.0, 3.0])}})
    values = heatmap_pixels(trace, view)
    np.testing.assert_array_equal(values, np.repeat(np.repeat(small.numpy(), 2, axis=0), 3, axis=1))
    assert heatmap_pixels(ImageTrace(2, "2.png", (4, 6), {}), view) is None
    ranges = heatmap_ranges([trace], [view, DETECTIONS_VIEW])
    assert list(ranges) == ["spread"]
    assert (ranges["spread"].low, ranges["spread"].high) == (-1.0, 4.0)
    assert ranges["spread"].description == "mean sigma (higher: more uncertain)"
    assert ranges["spread"].to_uint8(small.numpy()).tolist() == [[153, 0], [51, 255]]


def test_default_dataset_name_names_run_and_split(tmp_path):
    assert default_dataset_name(tmp_path / "frcnn-1", "val") == "workbench-frcnn-1-val"
