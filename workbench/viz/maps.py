"""Per-pixel maps (uncertainty, objectness) as heatmaps over the image.

A map is ``(H, W)`` in the original image's pixels, like the trace's ``uncertainty_map`` record
(KL-RPN: ``log_objectness``, ``sigma_product``). The paper figure of KL-RPN's map with its own
title lives in :func:`workbench.viz.proposals.uncertainty_map_figure`; this module is the generic
overlay any method's map uses, and the ``uncertainty`` layer of the image figures.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from workbench.viz.boxes import box_layer, fit_axes, image_layer, to_image, to_numpy


def map_layer(
    values: Any,
    *,
    name: str = "uncertainty",
    colorbar_title: str | None = None,
    opacity: float = 0.5,
    colorscale: str = "Viridis",
    visible: bool = True,
) -> go.Heatmap:
    """The map as a heatmap trace (layer ``uncertainty``); cell ``(row, col)`` covers
    ``[col, col + 1] x [row, row + 1]`` like the image's pixels."""
    z = to_numpy(values)
    if z.ndim != 2:
        raise ValueError(f"a map must be (H, W), got {z.shape}")
    return go.Heatmap(
        z=z, x0=0.5, y0=0.5, name=name, opacity=opacity, colorscale=colorscale, visible=visible,
        colorbar=dict(title=colorbar_title or name, len=0.75),
        hovertemplate=f"x %{{x}}, y %{{y}}<br>{name} %{{z:.3f}}<extra></extra>",
        meta={"layer": "uncertainty"},
    )


def map_overlay_figure(
    values: Any,
    *,
    image: Any = None,
    boxes: Any = None,
    name: str = "uncertainty",
    opacity: float = 0.5,
    title: str | None = None,
    height: int = 640,
) -> go.Figure:
    """The map over the ``image`` (when given; it must have the map's size), with optional
    ``boxes`` (N, 4) outlined in white. ``title`` defaults to ``"<name> map"`` (``""``: none)."""
    z = to_numpy(values)
    fig = go.Figure()
    if image is not None:
        pixels = to_image(image)
        if pixels.shape[:2] != z.shape:
            raise ValueError(f"image {pixels.shape[:2]} and map {z.shape} differ in size")
        fig.add_trace(image_layer(pixels))
    fig.add_trace(map_layer(z, name=name, opacity=opacity if image is not None else 1.0))
    if boxes is not None:
        fig.add_trace(box_layer(boxes, name="boxes", layer="gt", color="white"))
    fig.update_layout(title=f"{name} map" if title is None else title, height=height)
    return fit_axes(fig, z.shape[0], z.shape[1])
