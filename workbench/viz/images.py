"""One image with its layers: ground truth, detections, proposals, suppressed boxes, a map.

Each layer is optional and is one or two traces whose ``meta["layer"]`` is one of
:data:`LAYERS`; ``layers`` says which are visible (hidden layers stay in the figure, so a widget
can show them again without rebuilding it). Inputs are mappings of tensors or arrays shaped like
trace records (:mod:`workbench.records`), so one image's records plug in directly:
:func:`trace_image_figure` finds them through the views a method declares
(:class:`workbench.methods.RecordView`) and knows no method or method-specific record.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from workbench import records as R
from workbench.viz.boxes import (
    box_layer,
    canvas_size,
    class_name,
    fit_axes,
    image_layer,
    to_boxes,
    to_numpy,
    value_marker,
)
from workbench.viz.maps import MAP_LAYER, map_layer
from workbench.viz.nms import kept_detections, rerun_nms, suppression_layers

#: The layers of an image figure, bottom to top.
LAYERS = (MAP_LAYER, "proposals", "suppressed", "detections", "gt")
GT_COLOR = "#00ff7f"
DETECTION_COLOR = "#ffd700"
PROPOSAL_COLOR = "#9467bd"
#: Where the detections' colour bar sits when a heatmap's colour bar takes the default place.
HEATMAP_NEIGHBOUR_X = 1.2


def _above(record: Mapping[str, Any], threshold: float | None) -> np.ndarray:
    """Row indices of ``record`` whose score is at least ``threshold`` (all rows for None)."""
    scores = to_numpy(record["scores"])
    return np.arange(len(scores)) if threshold is None else np.flatnonzero(scores >= threshold)


def gt_layer(gt: Mapping[str, Any], class_names: Sequence[str] | None = None, visible: bool = True) -> go.Scatter:
    """Ground-truth boxes (``boxes``, optional ``labels``)."""
    boxes = to_boxes(gt["boxes"])
    labels = to_numpy(gt["labels"], dtype=np.int64) if gt.get("labels") is not None else None
    hover = [f"GT #{i}: {class_name(labels[i], class_names)}" if labels is not None else f"GT #{i}"
             for i in range(len(boxes))]
    return box_layer(boxes, name="ground truth", layer="gt", color=GT_COLOR, hover=hover, width=2.0, visible=visible)


def per_box_scalars(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The per-box scalar fields of a box record, by name: ``scores`` first, then, in record
    order, every other floating-point field with one value per box; a field of ``K`` values per
    box ``(N, K)`` (e.g. one per coordinate) by its mean over ``K``, named ``<field>_mean`` as
    the FiftyOne export names it. Boxes, labels and integer fields (indices, levels) are not
    scalars one colours by."""
    boxes = record.get(R.BOXES)
    count = len(to_boxes(boxes)) if boxes is not None else None
    fields: dict[str, np.ndarray] = {}
    for name in sorted(record, key=lambda n: n != R.SCORES):
        values = record[name]
        if name in (R.BOXES, R.LABELS) or not _is_float(values):
            continue
        array = to_numpy(values)
        if array.ndim == 0 or (count is not None and array.shape[0] != count) or array.ndim > 2:
            continue
        fields[name if array.ndim == 1 else f"{name}_mean"] = array if array.ndim == 1 else array.mean(axis=1)
    return fields


def _is_float(values: Any) -> bool:
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        return False
    if hasattr(dtype, "is_floating_point"):  # torch
        return bool(dtype.is_floating_point)
    return np.issubdtype(dtype, np.floating)


def detections_layer(
    detections: Mapping[str, Any],
    *,
    score_threshold: float | None = None,
    class_names: Sequence[str] | None = None,
    visible: bool = True,
    attributes: Sequence[Any] = (),
    color_by: str | None = None,
    color_title: str | None = None,
    color_range: tuple[float, float] | None = None,
    colorbar_x: float | None = None,
) -> go.Scatter:
    """Detections (``boxes``, ``scores``, ``labels``) with ``score >= score_threshold``;
    ``attributes`` (attribute views) add hover lines.

    ``color_by``: a per-box scalar of :func:`per_box_scalars` (``scores``, a method's predicted
    IoU, an uncertainty...); each detection's corners are coloured by it, on ``color_range``
    (default: the shown values' range), with a colour bar titled ``color_title`` (default: the
    field's name). A field the record lacks leaves the boxes uncoloured."""
    rows = _above(detections, score_threshold)
    scores = to_numpy(detections["scores"])
    labels = to_numpy(detections["labels"], dtype=np.int64)
    hover = [f"{class_name(labels[i], class_names)} {scores[i]:.3f}{attribute_text(detections, attributes, i)}"
             for i in rows]
    values = per_box_scalars(detections).get(color_by) if color_by is not None else None
    marker = None if values is None else value_marker(values[rows], title=color_title or color_by,
                                                      value_range=color_range, colorbar_x=colorbar_x)
    return box_layer(
        to_boxes(detections["boxes"])[rows], name="detections", layer="detections", color=DETECTION_COLOR,
        hover=hover, width=2.0, visible=visible, marker=marker,
        extra_meta={"index": rows.tolist(), **({"color_by": color_by} if marker is not None else {})},
    )


def attribute_text(record: Mapping[str, Any], attributes: Sequence[Any], i: int) -> str:
    """Hover lines of box ``i`` for the declared attribute views (``field``: values) found in
    ``record``."""
    lines = []
    for view in attributes:
        values = record.get(view.value_field)
        if values is None:
            continue
        row = np.atleast_1d(to_numpy(values)[i])
        lines.append(f"<br>{view.field} " + " ".join(f"{v:.3f}" for v in row))
    return "".join(lines)


def proposals_layer(
    proposals: Mapping[str, Any],
    *,
    score_threshold: float | None = None,
    visible: bool = True,
    attributes: Sequence[Any] = (),
    name: str = "proposals",
) -> go.Scatter:
    """Boxes without classes (``boxes``, ``scores`` and per-box fields) with
    ``score >= score_threshold``; ``attributes`` (attribute views) add hover lines."""
    rows = _above(proposals, score_threshold)
    scores = to_numpy(proposals["scores"])
    hover = [f"proposal #{i}: score {scores[i]:.3f}{attribute_text(proposals, attributes, i)}" for i in rows]
    return box_layer(
        to_boxes(proposals["boxes"])[rows], name=name, layer="proposals", color=PROPOSAL_COLOR,
        hover=hover, width=0.8, opacity=0.7, visible=visible, extra_meta={"index": rows.tolist()},
    )


def image_figure(
    image: Any = None,
    *,
    image_size: tuple[int, int] | None = None,
    gt: Mapping[str, Any] | None = None,
    detections: Mapping[str, Any] | None = None,
    proposals: Mapping[str, Any] | None = None,
    nms: Mapping[str, Any] | None = None,
    heatmap: Any = None,
    heatmap_cell: Sequence[float] | None = None,
    heatmap_name: str = "map",
    heatmap_title: str | None = None,
    score_threshold: float = 0.5,
    proposal_threshold: float | None = None,
    class_names: Sequence[str] | None = None,
    layers: Collection[str] = LAYERS,
    detection_attributes: Sequence[Any] = (),
    proposal_attributes: Sequence[Any] = (),
    proposals_name: str = "proposals",
    color_by: str | None = None,
    color_title: str | None = None,
    color_range: tuple[float, float] | None = None,
    title: str | None = None,
    height: int = 640,
) -> go.Figure:
    """The image with every layer given.

    - ``gt``: ``boxes`` (G, 4), optional ``labels``;
    - ``detections``: ``boxes``, ``scores``, ``labels``; shown with ``score >= score_threshold``;
    - ``proposals``: ``boxes``, ``scores`` (and per-box fields); ``score >= proposal_threshold``;
    - ``nms``: a class-wise NMS record; its suppressed boxes with ``score >= score_threshold``,
      each linked to its suppressor;
    - ``heatmap``: a map drawn under the boxes (layer ``map``), per pixel or on cells of
      ``heatmap_cell = (height, width)`` pixels; ``heatmap_name`` names it in hover text,
      ``heatmap_title`` on its colour bar (say what it shows).

    ``*_attributes``: attribute views (:class:`workbench.methods.RecordView`) whose per-box
    values the hover text shows. ``color_by`` / ``color_title`` / ``color_range`` colour the
    detections by a per-box scalar (see :func:`detections_layer`; its colour bar sits beside
    the heatmap's). ``layers`` lists the visible layers (see :data:`LAYERS`).
    ``image_size`` ``(h, w)`` sets the canvas when there is no image; ``height`` the figure's
    height in pixels.
    """
    unknown = set(layers) - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; known: {list(LAYERS)}")
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_layer(image))
    if heatmap is not None:
        fig.add_trace(map_layer(heatmap, cell=heatmap_cell, name=heatmap_name, colorbar_title=heatmap_title,
                                visible=MAP_LAYER in layers))
    if proposals is not None:
        fig.add_trace(proposals_layer(proposals, score_threshold=proposal_threshold, visible="proposals" in layers,
                                      attributes=proposal_attributes, name=proposals_name))
    if nms is not None:
        fig.add_traces(suppression_layers(nms, min_score=score_threshold, class_names=class_names,
                                          visible="suppressed" in layers))
    if detections is not None:
        fig.add_trace(detections_layer(detections, score_threshold=score_threshold, class_names=class_names,
                                       visible="detections" in layers, attributes=detection_attributes,
                                       color_by=color_by, color_title=color_title, color_range=color_range,
                                       colorbar_x=None if heatmap is None else HEATMAP_NEIGHBOUR_X))
    if gt is not None:
        fig.add_trace(gt_layer(gt, class_names, visible="gt" in layers))
    rows, cols = _canvas_size(image, image_size, heatmap, heatmap_cell, (gt, detections, proposals))
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.05), margin=dict(l=10, r=10, t=50, b=10),
                      height=height)
    return fit_axes(fig, rows, cols)


def _canvas_size(image: Any, image_size: tuple[int, int] | None, heatmap: Any, cell, box_sets) -> tuple[int, int]:
    """:func:`~workbench.viz.boxes.canvas_size`, with the heatmap's extent before the boxes'."""
    if image is None and image_size is None and heatmap is not None:
        h, w = to_numpy(heatmap).shape
        cell_h, cell_w = (1.0, 1.0) if cell is None else (float(cell[0]), float(cell[1]))
        return int(round(h * cell_h)), int(round(w * cell_w))
    return canvas_size(image, image_size, *(records["boxes"] for records in box_sets if records is not None))


def default_views() -> tuple[Any, ...]:
    """The two-stage views (:data:`workbench.methods.TWO_STAGE_VIEWS`)."""
    from workbench.methods import TWO_STAGE_VIEWS

    return TWO_STAGE_VIEWS


def pick_heatmap(views: Sequence[Any], records: Mapping[str, Mapping[str, Any]], heatmap: str | None = None):
    """The heatmap view to draw: the one whose ``field`` is ``heatmap``, else the first
    ``shown`` heatmap view, else the first heatmap view whose record is present (``None``)."""
    maps = [v for v in views if v.kind == "heatmap" and v.record in records and v.value_field in records[v.record]]
    if heatmap is not None:
        chosen = [v for v in maps if v.field == heatmap]
        if not chosen:
            raise ValueError(f"no heatmap view {heatmap!r} in these records; "
                             f"available: {', '.join(v.field for v in maps) or 'none'}")
        return chosen[0]
    shown = [v for v in maps if v.shown]
    return (shown or maps or [None])[0]


def trace_image_figure(
    records: Mapping[str, Mapping[str, Any]],
    *,
    views: Sequence[Any] | None = None,
    heatmap: str | None = None,
    image: Any = None,
    image_size: tuple[int, int] | None = None,
    gt: Mapping[str, Any] | None = None,
    score_threshold: float = 0.5,
    proposal_threshold: float | None = None,
    nms_iou: float | None = None,
    max_detections: int | None = None,
    class_names: Sequence[str] | None = None,
    layers: Collection[str] = LAYERS,
    color_by: str | None = None,
    color_range: tuple[float, float] | None = None,
    title: str | None = None,
) -> go.Figure:
    """:func:`image_figure` of one image's trace records, laid out by the method's ``views``
    (default: the two-stage views): the boxes view of the detections, the first other boxes
    view as the proposals layer, the suppressed view, and the heatmap view named ``heatmap``
    (default: the first shown one; see :func:`pick_heatmap`).

    With ``nms_iou`` the suppressed view's NMS is run again on its recorded input at that
    threshold and the detections are its kept boxes (at most ``max_detections``); otherwise the
    recorded detections and NMS are shown.

    ``color_by`` colours the detections by one of their per-box scalars (:func:`per_box_scalars`:
    ``scores`` or a field the method adds), on ``color_range``; the colour bar is titled by the
    method's attribute view of that field when it declares one (see :func:`scalar_title`).
    The detections of a re-run NMS carry only boxes, scores and labels.
    """
    views = tuple(default_views() if views is None else views)
    boxes_views = [v for v in views if v.kind == "boxes"]
    detection_view = next((v for v in boxes_views if v.record == R.DETECTIONS), None)
    proposal_view = next((v for v in boxes_views if v.record != R.DETECTIONS), None)
    suppressed_view = next((v for v in views if v.kind == "suppressed"), None)
    nms = records.get(suppressed_view.record) if suppressed_view is not None else None
    detections = records.get(detection_view.record) if detection_view is not None else None
    if nms_iou is not None and nms is not None:
        nms = rerun_nms(nms, nms_iou)
        detections = kept_detections(nms, max_detections=max_detections)
    map_view = pick_heatmap(views, records, heatmap)
    values = cell = None
    if map_view is not None:
        from workbench.inspection.maps import cell_size

        values = records[map_view.record][map_view.value_field]
        cell = cell_size(records[map_view.record], map_view.value_field)

    def attributes(view):
        return tuple(v for v in views if v.kind == "attribute" and view is not None and v.record == view.record)

    return image_figure(
        image, image_size=image_size, gt=gt, detections=detections,
        proposals=records.get(proposal_view.record) if proposal_view is not None else None,
        nms=nms, heatmap=values, heatmap_cell=cell,
        heatmap_name=map_view.layer_name if map_view is not None else "map",
        heatmap_title=_wrap_title(map_view.title) if map_view is not None else None,
        score_threshold=score_threshold, proposal_threshold=proposal_threshold, class_names=class_names,
        layers=layers, detection_attributes=attributes(detection_view), proposal_attributes=attributes(proposal_view),
        proposals_name=proposal_view.label if proposal_view is not None else "proposals",
        color_by=color_by, color_title=scalar_title(color_by, attributes(detection_view)) if color_by else None,
        color_range=color_range, title=title,
    )


def scalar_title(name: str, attributes: Sequence[Any] = ()) -> str:
    """What the per-box scalar ``name`` of :func:`per_box_scalars` shows, for a colour bar or a
    menu: the declared attribute view's title (its ``<field>_mean`` by ``"mean of"`` it), else
    ``"score"`` for the scores, else the name itself."""
    for view in attributes:
        if name == view.value_field:
            return _wrap_title(view.title)
        if name == f"{view.value_field}_mean":
            return _wrap_title(f"mean of {view.title}")
    return "score" if name == R.SCORES else name


def _wrap_title(text: str, width: int = 30) -> str:
    import textwrap

    return "<br>".join(textwrap.wrap(text, width)) or text


def layer_traces(fig: go.Figure, layer: str) -> list[Any]:
    """The traces of ``fig`` that draw ``layer``."""
    return [trace for trace in fig.data if (trace.meta or {}).get("layer") == layer]
