"""Anchors before and after a refinement step, over the image: pure figure builders (arrays in,
``go.Figure`` out) for detectors whose first module moves the anchors that a second module then
classifies and regresses (a two-step cascade of anchor regression).

- :func:`anchor_refinement_figure`: chosen anchors (dashed) and their refined boxes (solid),
  each pair linked by an arrow from centre to centre, coloured by the refinement module's
  object probability;
- :func:`detection_sources_figure`: for each detection its original anchor (dotted), its
  refined anchor (dashed) and the final box (solid), linked by arrows;
- :func:`anchor_iou_shift_figure`: histograms of the IoU with the matched ground truth of the
  anchors before and after refinement (refinement should move the mass to the right);
- :func:`filtered_share_figure`: the share of the anchors filtered at each location, one panel
  per level (plus their mean), over the image.

Boxes are absolute ``xyxy`` pixels of the image shown, ``(N, 4)``; every trace carries
``meta["layer"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from workbench.viz.boxes import (
    box_layer,
    canvas_size,
    class_color,
    class_name,
    fit_axes,
    image_layer,
    to_boxes,
    to_image,
    to_numpy,
)
from workbench.viz.iou import iou_histogram_figure
from workbench.viz.maps import image_panel_axes, map_layer

#: Layers of the refinement figures.
ANCHOR_LAYER = "anchors"
REFINED_LAYER = "refined anchors"
ARROW_LAYER = "refinement"
FINAL_LAYER = "detections"
COLORSCALE = "Viridis"


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def _arrows(fig: go.Figure, start: np.ndarray, end: np.ndarray, colors: Sequence[str], width: float = 1.2) -> None:
    for (x0, y0), (x1, y1), color in zip(start, end, colors):
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=width, arrowcolor=color)


def _color_bins(values: np.ndarray, bins: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Bin index per value in [0, 1], the bins' colours and their edges."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(values, edges[1:-1]), 0, bins - 1)
    colors = sample_colorscale(COLORSCALE, list((edges[:-1] + edges[1:]) / 2))
    return index, colors, edges


def anchor_refinement_figure(
    anchors: Any,
    refined: Any,
    objectness: Any,
    *,
    image: Any = None,
    image_size: tuple[int, int] | None = None,
    gt_boxes: Any = None,
    bins: int = 5,
    title: str = "Anchors before (dashed) and after (solid) refinement, coloured by object probability",
    height: int = 640,
) -> go.Figure:
    """Anchors (N, 4) and their refined boxes (N, 4) with the object probability (N,) of each:
    one dashed and one solid layer per probability bin (``bins`` equal bins of [0, 1], colours
    of the Viridis scale), an arrow from each anchor's centre to its refined box's centre, a
    colour bar, and ``gt_boxes`` outlined in white."""
    before, after = to_boxes(anchors), to_boxes(refined)
    prob = to_numpy(objectness).reshape(-1)
    if not (before.shape == after.shape and before.shape[0] == prob.shape[0]):
        raise ValueError(f"anchors {before.shape}, refined {after.shape} and objectness {prob.shape} do not align")
    rows, cols = canvas_size(image, image_size, before, after)
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_layer(image))
    if gt_boxes is not None:
        fig.add_trace(box_layer(gt_boxes, name="ground truth", layer="gt", color="white", width=2))
    index, colors, edges = _color_bins(prob, bins)
    for k in range(bins):
        chosen = index == k
        if not chosen.any():
            continue
        label = f"object p {edges[k]:.1f}-{edges[k + 1]:.1f}"
        hover = [f"anchor {i}<br>object probability {prob[i]:.3f}" for i in np.flatnonzero(chosen)]
        fig.add_trace(box_layer(before[chosen], name=f"anchors, {label}", layer=ANCHOR_LAYER, color=colors[k],
                                dash="dash", width=1.0, hover=hover))
        fig.add_trace(box_layer(after[chosen], name=f"refined, {label}", layer=REFINED_LAYER, color=colors[k],
                                width=2.0, hover=hover))
    _arrows(fig, _centres(before), _centres(after), [colors[k] for k in index])
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip", meta={"layer": "colorbar"},
        marker=dict(colorscale=COLORSCALE, cmin=0, cmax=1, color=[0.0], showscale=True,
                    colorbar=dict(title=dict(text="object probability", side="right"), len=0.75)),
    ))
    fig.update_layout(title=title, height=height, legend=dict(orientation="h", y=-0.08))
    return fit_axes(fig, rows, cols)


def detection_sources_figure(
    anchors: Any,
    refined: Any,
    boxes: Any,
    labels: Any,
    scores: Any,
    *,
    image: Any = None,
    image_size: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "Each detection (solid) with its anchor (dotted) and refined anchor (dashed)",
    height: int = 640,
) -> go.Figure:
    """Per detection ``i``: its original anchor ``anchors[i]``, its refined anchor
    ``refined[i]`` and its final box ``boxes[i]``, in the class colour, with arrows anchor ->
    refined anchor -> box (centres)."""
    a, r, b = to_boxes(anchors), to_boxes(refined), to_boxes(boxes)
    lab = to_numpy(labels, dtype=np.int64).reshape(-1)
    sc = to_numpy(scores).reshape(-1)
    if not (a.shape == r.shape == b.shape and a.shape[0] == lab.shape[0] == sc.shape[0]):
        raise ValueError(f"anchors {a.shape}, refined {r.shape}, boxes {b.shape}, labels {lab.shape} and "
                         f"scores {sc.shape} do not align")
    rows, cols = canvas_size(image, image_size, a, r, b)
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_layer(image))
    for label in sorted(set(lab.tolist())):
        chosen = lab == label
        color = class_color(label)
        name = class_name(label, class_names)
        hover = [f"{name} {sc[i]:.3f}" for i in np.flatnonzero(chosen)]
        fig.add_trace(box_layer(a[chosen], name=f"{name}: anchors", layer=ANCHOR_LAYER, color=color, dash="dot",
                                width=1.0, hover=hover))
        fig.add_trace(box_layer(r[chosen], name=f"{name}: refined anchors", layer=REFINED_LAYER, color=color,
                                dash="dash", width=1.5, hover=hover))
        fig.add_trace(box_layer(b[chosen], name=f"{name}: detections", layer=FINAL_LAYER, color=color, width=2.5,
                                hover=hover))
    colors = [class_color(label) for label in lab]
    _arrows(fig, _centres(a), _centres(r), colors, width=1.0)
    _arrows(fig, _centres(r), _centres(b), colors, width=1.0)
    fig.update_layout(title=title, height=height, legend=dict(orientation="h", y=-0.08))
    return fit_axes(fig, rows, cols)


def anchor_iou_shift_figure(
    iou_before: Any,
    iou_after: Any,
    *,
    bins: int = 20,
    title: str = "IoU with the matched ground truth, anchors before and after refinement",
) -> go.Figure:
    """Two histograms over [0, 1] (the share of the anchors per IoU bin) and each set's mean in
    its legend entry and ``meta["mean"]``."""
    before, after = to_numpy(iou_before).reshape(-1), to_numpy(iou_after).reshape(-1)
    fig = iou_histogram_figure({"before refinement": before, "after refinement": after}, low=0.0, bins=bins,
                               title=title)
    for trace, values in zip(fig.data, (before, after)):
        mean = float(values.mean()) if values.size else float("nan")
        trace.meta = {**trace.meta, "mean": mean}
        trace.name = f"{trace.name}, mean {mean:.3f}"
    fig.update_layout(barmode="overlay")
    fig.update_traces(opacity=0.6)
    return fig


def filtered_share_figure(
    maps: Mapping[str, Any],
    *,
    cell: Sequence[float] | None = None,
    image: Any = None,
    columns: int = 3,
    opacity: float = 0.6,
    panel_height: int = 320,
    title: str = "Share of the anchors filtered at each location",
) -> go.Figure:
    """One panel per map (name -> ``(R, C)`` share in [0, 1] on cells of ``cell`` pixels), over
    the ``image``, on one colour range [0, 1]."""
    if not maps:
        raise ValueError("no maps to draw")
    pixels = to_image(image) if image is not None else None
    names = list(maps)
    ncols = min(columns, len(names))
    nrows = -(-len(names) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=names, horizontal_spacing=0.04, vertical_spacing=0.1)
    cell_h, cell_w = (1.0, 1.0) if cell is None else (float(cell[0]), float(cell[1]))
    for k, name in enumerate(names):
        row, col = k // ncols + 1, k % ncols + 1
        values = to_numpy(maps[name])
        height, width = pixels.shape[:2] if pixels is not None else (values.shape[0] * cell_h, values.shape[1] * cell_w)
        if pixels is not None:
            fig.add_trace(image_layer(pixels), row=row, col=col)
        layer = map_layer(values, cell=cell, name=name, colorbar_title="share filtered",
                          opacity=opacity if pixels is not None else 1.0, showscale=k == 0)
        layer.update(zmin=0.0, zmax=1.0)
        fig.add_trace(layer, row=row, col=col)
        image_panel_axes(fig, row, col, width, height)
    fig.update_layout(title=title, height=panel_height * nrows + 80, showlegend=False)
    return fig


__all__ = [
    "anchor_iou_shift_figure",
    "anchor_refinement_figure",
    "detection_sources_figure",
    "filtered_share_figure",
]
