"""The layered image figure: layers, visibility, thresholds, coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from viz_records import MAP_VIEWS, make_gt, make_image, make_records

from workbench.viz.boxes import canvas_size, outline_coordinates, to_image
from workbench.methods import RecordView
from workbench.viz.images import LAYERS, image_figure, layer_traces, per_box_scalars, trace_image_figure
from workbench.viz.nms import kept_detections, rerun_nms


def test_box_outline_is_a_closed_path_with_a_gap():
    xs, ys = outline_coordinates(np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    assert np.allclose(xs[:5], [1, 3, 3, 1, 1]) and np.allclose(ys[:5], [2, 2, 4, 4, 2])
    assert np.isnan(xs[5]) and np.isnan(ys[5]) and len(xs) == 12
    assert np.allclose(xs[6:11], [5, 7, 7, 5, 5])


def test_images_convert_from_chw_tensors_and_float_arrays():
    chw = make_image(0, 8)
    assert np.array_equal(to_image(chw), chw.permute(1, 2, 0).numpy())
    floats = np.full((4, 5, 3), 0.5)
    assert to_image(floats).dtype == np.uint8 and int(to_image(floats)[0, 0, 0]) == 127
    with pytest.raises(ValueError, match="an image must be"):
        to_image(np.zeros((4, 5, 7)))


def test_the_canvas_is_the_image_else_the_given_size_else_the_boxes_extent():
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 70.2, 30.0]])
    assert canvas_size(image, (10, 10), boxes) == (40, 60)
    assert canvas_size(None, (10.0, 20.0), boxes) == (10, 20)
    assert canvas_size(None, None, boxes, np.array([[5.0, 5.0, 9.0, 45.5]]), None) == (46, 71)
    assert canvas_size(None, None, np.zeros((0, 4))) == (1, 1)
    assert canvas_size(None, None, torch.tensor([[0.0, 0.0, 0.4, 0.2]])) == (1, 1)


def test_every_layer_is_drawn_and_only_the_asked_ones_are_visible():
    records = make_records(seed=1)
    fig = trace_image_figure(records, views=MAP_VIEWS, image=make_image(1), gt=make_gt(1), score_threshold=0.0,
                             layers=("gt", "suppressed"))
    for layer in LAYERS:
        traces = layer_traces(fig, layer)
        assert traces, layer
        assert all(t.visible == (layer in ("gt", "suppressed")) for t in traces), layer
    assert layer_traces(fig, "image")[0].type == "image"
    assert fig.layout.yaxis.range == (64, 0) and fig.layout.xaxis.range == (0, 64)


def test_score_thresholds_filter_detections_suppressed_and_proposals():
    records = make_records(seed=2)
    fig = trace_image_figure(records, views=MAP_VIEWS, score_threshold=0.6, proposal_threshold=0.0,
                             image_size=(64, 64))
    det = records["detections"]
    (detections,) = layer_traces(fig, "detections")
    assert detections.meta["index"] == torch.nonzero(det["scores"] >= 0.6).flatten().tolist()
    (proposals,) = layer_traces(fig, "proposals")
    assert proposals.meta["count"] == int((records["rpn_proposals"]["scores"] >= 0.0).sum())
    sigma = records["rpn_proposals"]["sigma"][0]
    assert proposals.hovertext[0].endswith("<br>sigma " + " ".join(f"{v:.3f}" for v in sigma.tolist()))
    suppressed = layer_traces(fig, "suppressed")[0]
    assert all(records["rcnn_nms"]["scores"][j] >= 0.6 for j in suppressed.meta["index"])


def test_nms_iou_reruns_the_final_nms():
    records = make_records(seed=3)
    fig = trace_image_figure(records, score_threshold=0.0, nms_iou=0.2, image_size=(64, 64))
    fresh = kept_detections(rerun_nms(records["rcnn_nms"], 0.2))
    (detections,) = layer_traces(fig, "detections")
    assert detections.meta["count"] == len(fresh["scores"])
    assert detections.meta["count"] < len(records["detections"]["scores"])


def test_a_declared_heatmap_is_drawn_under_the_boxes_on_its_cells():
    records = make_records(seed=4)
    fig = trace_image_figure(records, views=MAP_VIEWS, image=make_image(4))
    kinds = [t.type for t in fig.data]
    assert kinds.index("heatmap") < kinds.index("scatter")
    (heatmap,) = layer_traces(fig, "map")
    assert np.allclose(heatmap.z, records["uncertainty_map"]["sigma_mean"].numpy())
    assert (heatmap.x0, heatmap.dx, heatmap.y0, heatmap.dy) == (2.0, 4.0, 2.0, 4.0)
    assert layer_traces(fig, "image")[0].x0 == 0.5
    assert heatmap.colorbar.title.text == "mean spread" and heatmap.name == "spread"
    # hover text of proposals lists the declared attribute
    (proposals,) = layer_traces(fig, "proposals")
    assert "<br>sigma " in proposals.hovertext[0]
    # without a heatmap view nothing is drawn: the two-stage views know no map
    assert layer_traces(trace_image_figure(records, image=make_image(4)), "map") == []
    with pytest.raises(ValueError, match="no heatmap view 'nope'"):
        trace_image_figure(records, views=MAP_VIEWS, heatmap="nope")


def test_unknown_layers_are_refused():
    with pytest.raises(ValueError, match="unknown layers"):
        image_figure(image_size=(10, 10), layers=("gt", "halos"))


def test_class_names_label_ground_truth_hover():
    gt = {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([2])}
    fig = image_figure(gt=gt, class_names=["circle", "square"])
    assert layer_traces(fig, "gt")[0].hovertext[0] == "GT #0: square"


def test_per_box_scalars_are_the_float_fields_with_one_value_per_box():
    record = {"boxes": torch.zeros(3, 4), "labels": torch.ones(3, dtype=torch.int64), "level": torch.tensor([0, 1, 2]),
              "iou_pred": torch.tensor([0.2, 0.9, 0.5]), "scores": torch.tensor([0.3, 0.2, 0.1]),
              "sigma": torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 0.0]]), "cell_size": torch.tensor([4.0, 4.0, 4.0, 4.0])}
    scalars = per_box_scalars(record)
    assert list(scalars) == ["scores", "iou_pred", "sigma_mean"]
    np.testing.assert_allclose(scalars["sigma_mean"], [2.0, 2.0, 0.0])


def test_coloured_detections_keep_their_colour_bar_beside_the_heatmaps():
    records = make_records(seed=4)
    records["detections"]["iou_pred"] = torch.linspace(0.1, 0.9, len(records["detections"]["scores"]))
    view = RecordView("detections", "attribute", field="iou_pred", label="predicted IoU", higher="better localised")
    fig = trace_image_figure(records, views=(*MAP_VIEWS, view), score_threshold=0.0, color_by="iou_pred")
    (det,) = layer_traces(fig, "detections")
    assert det.marker.colorbar.title.text == "predicted IoU (higher: better<br>localised)"
    assert (det.marker.cmin, det.marker.cmax) == pytest.approx((0.1, 0.9))
    heatmap_bar = layer_traces(fig, "map")[0].colorbar
    assert det.marker.colorbar.x is not None and det.marker.colorbar.x != heatmap_bar.x
