"""Figures of a per-anchor uncertainty: its map over the image, a difficulty map with the anchors
that were right and wrong, detections coloured by their uncertainty, and the uncertainty of true
against false positives.

Pure builders: arrays (or tensors) in, ``go.Figure`` out. Maps are ``(R, C)`` on cells of
``cell = (height, width)`` original-image pixels (as map records store them,
:data:`workbench.records.MAP_CELL_SIZE`); boxes and points are original-image pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from workbench.viz.boxes import box_layer, canvas_size, class_name, fit_axes, image_layer, to_boxes, to_image, to_numpy
from workbench.viz.maps import add_map_panel, map_layer

GT_COLOR = "#00ff7f"
#: Marker colours of anchors by outcome.
OUTCOME_COLORS = {"TP": "#2ca02c", "FP": "#d62728", "FN": "#ff7f0e"}
TP_COLOR, FP_COLOR = "#1f77b4", "#d62728"


def _extent(image: Any, values: np.ndarray, cell: Sequence[float]) -> tuple[int, int]:
    if image is not None:
        height, width = to_image(image).shape[:2]
        return int(height), int(width)
    return int(round(values.shape[0] * float(cell[0]))), int(round(values.shape[1] * float(cell[1])))


def uncertainty_map_figure(
    maps: Mapping[str, Any],
    cell: Sequence[float],
    *,
    image: Any = None,
    boxes: Any = None,
    colorbar_title: str = "BALD (bits)",
    zmax: float | None = None,
    opacity: float = 0.6,
    columns: int = 2,
    panel_height: int = 340,
    title: str | None = "uncertainty map",
) -> go.Figure:
    """One panel per map (``title -> (R, C)``, e.g. each scale and the maximum over the
    scales), over the ``image``, ``boxes`` (N, 4) outlined; one colour scale for all panels
    (``0 .. zmax``, default the largest value)."""
    if not maps:
        raise ValueError("no map to show")
    arrays = {name: to_numpy(values) for name, values in maps.items()}
    top = zmax if zmax is not None else max(float(np.nanmax(a)) if a.size else 0.0 for a in arrays.values())
    ncols = min(columns, len(arrays))
    nrows = -(-len(arrays) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=list(arrays), horizontal_spacing=0.04,
                        vertical_spacing=0.1)
    pixels = to_image(image) if image is not None else None
    for k, (name, values) in enumerate(arrays.items()):
        row, col = k // ncols + 1, k % ncols + 1
        height, width = _extent(image, values, cell)
        layer = map_layer(values, cell=cell, name=name, colorbar_title=colorbar_title,
                          opacity=opacity if pixels is not None else 1.0, showscale=k == 0)
        layer.update(zmin=0.0, zmax=max(top, 1e-6))
        add_map_panel(fig, row, col, layer, pixels, boxes, width, height)
    fig.update_layout(title=title, height=panel_height * nrows + 80, showlegend=False)
    return fig


def difficulty_map_figure(
    difficulty: Any,
    cell: Sequence[float],
    *,
    image: Any = None,
    gt_boxes: Any = None,
    points: Mapping[str, Any] | None = None,
    opacity: float = 0.55,
    title: str | None = "difficulty map",
    height: int = 640,
) -> go.Figure:
    """The difficulty map ``(R, C)`` (0..1) over the ``image``, the GT boxes outlined and the
    anchors of each outcome (``points``: ``"TP"`` / ``"FP"`` / ``"FN"`` -> ``(K, 2)`` x, y of
    the anchor centres) as markers."""
    values = to_numpy(difficulty)
    rows, cols = _extent(image, values, cell)
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_layer(image))
    layer = map_layer(values, cell=cell, name="difficulty", colorbar_title="difficulty D",
                      opacity=opacity if image is not None else 1.0, colorscale="Inferno")
    layer.update(zmin=0.0, zmax=1.0)
    fig.add_trace(layer)
    if gt_boxes is not None:
        fig.add_trace(box_layer(gt_boxes, name="ground truth", layer="gt", color=GT_COLOR, width=2.0))
    for outcome, xy in (points or {}).items():
        xy = to_numpy(xy).reshape(-1, 2)
        fig.add_trace(go.Scatter(
            x=xy[:, 0], y=xy[:, 1], mode="markers", name=f"{outcome} anchors ({len(xy)})",
            marker=dict(symbol="x" if outcome == "FP" else "circle", size=9,
                        color=OUTCOME_COLORS.get(outcome, "white"), line=dict(width=1, color="black")),
            meta={"layer": f"anchors_{outcome.lower()}"},
        ))
    fig.update_layout(title=title, height=height, legend=dict(orientation="h", y=-0.05))
    return fit_axes(fig, rows, cols)


def detections_by_uncertainty_figure(
    detections: Mapping[str, Any],
    *,
    image: Any = None,
    image_size: tuple[int, int] | None = None,
    gt_boxes: Any = None,
    field: str = "uncertainty",
    score_threshold: float | None = 0.3,
    class_names: Sequence[str] | None = None,
    colorscale: str = "Plasma",
    cmax: float | None = None,
    title: str | None = "detections coloured by uncertainty",
    height: int = 640,
) -> go.Figure:
    """Detections (``boxes``, ``scores``, ``labels``, ``field``) with ``score >=
    score_threshold``, each outlined in the colour of its ``field`` value (``0 .. cmax``,
    default the largest shown), with a colour bar; GT boxes dashed."""
    boxes = to_boxes(detections["boxes"])
    scores = to_numpy(detections["scores"])
    labels = to_numpy(detections["labels"], dtype=np.int64)
    values = to_numpy(detections[field])
    rows = np.arange(len(scores)) if score_threshold is None else np.flatnonzero(scores >= score_threshold)
    top = cmax if cmax is not None else (float(values[rows].max()) if rows.size else 1.0)
    top = max(top, 1e-6)
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_layer(image))
    if gt_boxes is not None:
        fig.add_trace(box_layer(gt_boxes, name="ground truth", layer="gt", color=GT_COLOR, dash="dash"))
    colors = sample_colorscale(colorscale, list(np.clip(values[rows] / top, 0.0, 1.0))) if rows.size else []
    for i, color in zip(rows, colors):
        text = f"{class_name(labels[i], class_names)} {scores[i]:.3f}<br>{field} {values[i]:.3f}"
        fig.add_trace(box_layer(boxes[i:i + 1], name=text.replace("<br>", ", "), layer="detections", color=color,
                                hover=[text], width=2.0))
    centres = 0.5 * (boxes[rows, :2] + boxes[rows, 2:]) if rows.size else np.zeros((0, 2))
    fig.add_trace(go.Scatter(
        x=centres[:, 0], y=centres[:, 1], mode="markers", name=field, showlegend=False, hoverinfo="skip",
        marker=dict(size=4, color=values[rows], cmin=0.0, cmax=top, colorscale=colorscale, showscale=True,
                    colorbar=dict(title=dict(text=field, side="right"), len=0.75)),
        meta={"layer": "detections"},
    ))
    fig.update_layout(title=title, height=height, showlegend=False)
    return fit_axes(fig, *canvas_size(image, image_size, boxes))


def uncertainty_distribution_figure(
    tp_values: Any,
    fp_values: Any,
    *,
    bins: int = 30,
    value_name: str = "uncertainty (BALD, bits)",
    auroc: float | None = None,
    title: str | None = None,
    height: int = 420,
) -> go.Figure:
    """Histograms (as densities) of the uncertainty of true and of false positives, their means
    in the legend; ``auroc`` (of the uncertainty telling FP from TP), when given and not NaN, in the
    title."""
    tp, fp = to_numpy(tp_values).reshape(-1), to_numpy(fp_values).reshape(-1)
    both = np.concatenate([tp, fp])
    low, high = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    size = (high - low) / bins if high > low else 1.0 / bins
    fig = go.Figure()
    for name, values, color in (("true positives", tp, TP_COLOR), ("false positives", fp, FP_COLOR)):
        mean = f"mean {values.mean():.3f}" if values.size else "none"
        fig.add_trace(go.Histogram(
            x=values, name=f"{name} ({values.size}, {mean})", histnorm="probability density", opacity=0.6,
            marker_color=color, xbins=dict(start=low, end=high + size, size=size),
        ))
    if title is None:
        title = "uncertainty of true and false positives"
        if auroc is not None and not np.isnan(auroc):
            title += f" (AUROC {auroc:.3f})"
    fig.update_layout(title=title, barmode="overlay", height=height, xaxis_title=value_name, yaxis_title="density",
                      legend=dict(orientation="h", y=-0.2))
    return fig


__all__ = [
    "detections_by_uncertainty_figure",
    "difficulty_map_figure",
    "uncertainty_distribution_figure",
    "uncertainty_map_figure",
]
