"""The ipywidgets explorer: its callbacks redraw the figure from the pure builders."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import torchvision
from viz_records import make_gt, make_image, make_records

from workbench.methods import RecordView
from workbench.viz.explorer import ExplorerImage, TraceExplorer, explorer_images
from workbench.viz.images import default_views


def layer(explorer, name, role=None):
    return [t for t in explorer.figure.data if (t.meta or {}).get("layer") == name and (t.meta or {}).get("role") == role]


@pytest.fixture
def explorer():
    images = [
        ExplorerImage(image_id=10 + i, image=make_image(i), records=make_records(seed=i), gt=make_gt(i), label=f"img {i}")
        for i in range(2)
    ]
    return TraceExplorer(images, class_names=["a", "b", "c"], score_threshold=0.2)


def test_builds_a_figure_widget_with_the_default_layers(explorer):
    assert isinstance(explorer.figure, go.FigureWidget)
    assert explorer.visible_layers() == ["detections", "gt"]
    assert layer(explorer, "gt")[0].visible is True
    assert layer(explorer, "proposals")[0].visible is False
    assert explorer.figure.layout.title.text == "img 0"
    assert explorer.nms_iou.value == pytest.approx(0.5)


def test_picking_an_image_redraws_it_and_refits_the_proposal_slider(explorer):
    before = np.array(layer(explorer, "gt")[0].x, dtype=float)
    explorer.picker.value = 1
    after = np.array(layer(explorer, "gt")[0].x, dtype=float)
    expected_x0 = make_gt(1)["boxes"][0, 0].item()
    assert not np.array_equal(before, after, equal_nan=True)
    assert after[0] == pytest.approx(expected_x0)
    assert explorer.figure.layout.title.text == "img 1"
    scores = make_records(seed=1)["rpn_proposals"]["scores"]
    assert explorer.proposal_score.min == pytest.approx(scores.min().item())
    assert explorer.proposal_score.max == pytest.approx(scores.max().item())


def test_a_toggle_flips_only_that_layer(explorer):
    traces_before = len(explorer.figure.data)
    explorer.toggles["suppressed"].value = True
    assert all(t.visible is True for t in layer(explorer, "suppressed") + layer(explorer, "suppressed", "links"))
    explorer.toggles["gt"].value = False
    assert layer(explorer, "gt")[0].visible is False
    assert layer(explorer, "detections")[0].visible is True
    assert len(explorer.figure.data) == traces_before


def test_the_score_threshold_filters_detections(explorer):
    scores = make_records(seed=0)["detections"]["scores"]
    explorer.score.value = 0.7
    assert layer(explorer, "detections")[0].meta["count"] == int((scores >= 0.7).sum())
    explorer.score.value = 0.0
    assert layer(explorer, "detections")[0].meta["count"] == len(scores)


def test_the_nms_threshold_reruns_nms_and_keeps_the_toggles(explorer):
    explorer.score.value = 0.0
    explorer.toggles["proposals"].value = True
    nms = make_records(seed=0)["rcnn_nms"]
    explorer.nms_iou.value = 0.2
    expected = torchvision.ops.batched_nms(nms["boxes"], nms["scores"], nms["idxs"], 0.2)
    assert layer(explorer, "detections")[0].meta["count"] == len(expected)
    suppressed = layer(explorer, "suppressed")[0].meta["count"]
    assert suppressed == len(nms["scores"]) - len(expected)
    assert layer(explorer, "proposals")[0].visible is True


def test_proposal_threshold_hides_low_proposals(explorer):
    explorer.toggles["proposals"].value = True
    scores = make_records(seed=0)["rpn_proposals"]["scores"]
    cut = float(torch.quantile(scores, 0.5))
    explorer.proposal_score.value = cut
    count = layer(explorer, "proposals")[0].meta["count"]
    assert count == int((scores >= explorer.proposal_score.value).sum()) and count < len(scores)


def test_explorer_images_pair_traces_with_dataset_samples():
    samples = {7: SimpleNamespace(image=make_image(3), boxes=torch.ones(1, 4), labels=torch.tensor([1]))}

    class Dataset:
        def index_of(self, image_id):
            return image_id

        def __getitem__(self, index):
            return samples[index]

    dataset = Dataset()
    traces = [SimpleNamespace(image_id=7, file_name="seven.png", records={"x": {}})]
    (item,) = explorer_images(traces, dataset)
    assert item.image_id == 7 and item.label == "7: seven.png" and item.records == {"x": {}}
    assert torch.equal(item.gt["boxes"], torch.ones(1, 4))
    assert explorer_images(traces, dataset, limit=0) == []


def test_an_empty_explorer_is_refused():
    with pytest.raises(ValueError, match="at least one image"):
        TraceExplorer([])


def with_predicted_iou(seed):
    """Records whose detections carry two predicted IoUs (as a method adds per-box fields) and an
    integer field that is no scalar to colour by."""
    records = make_records(seed=seed)
    det = records["detections"]
    g = torch.Generator().manual_seed(100 + seed)
    det["iou_pred"] = torch.rand(len(det["scores"]), generator=g) * (0.5 + 0.4 * seed)
    det["iou_pred_first"] = torch.rand(len(det["scores"]), generator=g)
    det["anchor_index"] = torch.arange(len(det["scores"]))
    return records


@pytest.fixture
def iou_explorer():
    images = [ExplorerImage(image_id=i, image=make_image(i), records=with_predicted_iou(i), gt=make_gt(i))
              for i in range(2)]
    views = (*default_views(), RecordView("detections", "attribute", field="iou_pred", label="predicted IoU"))
    return TraceExplorer(images, views=views, color_by="iou_pred", score_threshold=0.3)


def test_the_detections_are_coloured_by_a_per_detection_scalar_on_one_scale(iou_explorer):
    options = [value for _, value in iou_explorer.color_by.options]
    assert options == [None, "scores", "iou_pred", "iou_pred_first"]
    (det,) = layer(iou_explorer, "detections")
    values = with_predicted_iou(0)["detections"]["iou_pred"].numpy()
    assert det.mode == "lines+markers" and det.meta["color_by"] == "iou_pred"
    corners = np.array(det.marker.color, dtype=float).reshape(-1, 6)
    np.testing.assert_allclose(corners, np.repeat(values[det.meta["index"]][:, None], 6, axis=1), rtol=1e-6)
    # one scale over both images: the second image's larger values set its top
    both = np.concatenate([with_predicted_iou(i)["detections"]["iou_pred"].numpy() for i in range(2)])
    assert (det.marker.cmin, det.marker.cmax) == pytest.approx((both.min(), both.max()))
    assert det.marker.showscale is True and det.marker.colorbar.title.text == "predicted IoU"
    # the colour follows the value: the highest predicted IoU takes the top of the scale
    assert np.argmax(corners[:, 0]) == np.argmax(values[det.meta["index"]])


def test_picking_another_field_or_none_recolours_the_detections(iou_explorer):
    iou_explorer.color_by.value = "iou_pred_first"
    (det,) = layer(iou_explorer, "detections")
    first = with_predicted_iou(0)["detections"]["iou_pred_first"].numpy()[det.meta["index"]]
    np.testing.assert_allclose(np.array(det.marker.color, dtype=float)[::6], first, rtol=1e-6)
    assert det.marker.colorbar.title.text == "iou_pred_first"
    iou_explorer.picker.value = 1
    (det,) = layer(iou_explorer, "detections")
    second = with_predicted_iou(1)["detections"]["iou_pred_first"].numpy()[det.meta["index"]]
    np.testing.assert_allclose(np.array(det.marker.color, dtype=float)[::6], second, rtol=1e-6)
    iou_explorer.color_by.value = None
    (det,) = layer(iou_explorer, "detections")
    assert det.mode == "lines" and det.marker.color is None and "color_by" not in det.meta


def test_colouring_by_a_field_no_image_carries_is_refused():
    images = [ExplorerImage(image_id=0, image=make_image(0), records=make_records(seed=0))]
    with pytest.raises(ValueError, match="no per-detection scalar 'iou_pred'.*available: scores"):
        TraceExplorer(images, color_by="iou_pred")


def test_displaying_shows_the_static_first_view_then_the_live_widget(explorer, monkeypatch):
    import IPython.display
    import ipywidgets as widgets

    from workbench.viz.explorer import RECORD_ENV

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects: shown.extend(objects))
    monkeypatch.delenv(RECORD_ENV, raising=False)
    explorer._ipython_display_()  # live in JupyterLab: the widget alone
    assert len(shown) == 1 and isinstance(shown[0], widgets.VBox)
    shown.clear()
    monkeypatch.setenv(RECORD_ENV, "1")  # executed as a record by the pipelines
    explorer._ipython_display_()
    static, widget = shown
    assert type(static) is go.Figure  # a plain figure: it renders in a record without a kernel
    assert isinstance(widget, widgets.VBox) and widget.children[-1] is explorer.figure
    assert static.layout.title.text.startswith("img 0: the explorer's first view (static")
    assert [t.meta for t in static.data] == [t.meta for t in explorer.figure.data]
    assert static.layout.width == explorer.figure.layout.width
