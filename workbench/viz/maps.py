"""Per-pixel or per-cell maps (an uncertainty map, an objectness map) as heatmaps over the image.

A map is ``(R, C)``. With ``cell=None`` it has one value per original-image pixel; with
``cell=(height, width)`` each value covers a cell of that many original-image pixels (cell
``(r, c)`` covers ``[c * width, (c + 1) * width) x [r * height, (r + 1) * height)``), as a map
record stores it (:data:`workbench.records.MAP_CELL_SIZE`): the figure places the cells, nothing is
upsampled. What a map shows is its view's business (:class:`workbench.methods.RecordView`):
:func:`map_panels_figure` draws the heatmap views of one record, titled by their labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.viz.boxes import box_layer, fit_axes, image_layer, to_image, to_numpy

#: The figure layer of a map (see :data:`workbench.viz.images.LAYERS`).
MAP_LAYER = "map"


def _cell(cell: Sequence[float] | Any | None) -> tuple[float, float]:
    if cell is None:
        return 1.0, 1.0
    height, width = (float(v) for v in to_numpy(cell).reshape(-1)[:2])
    return height, width


def _wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most about ``width`` characters (``<br>`` between)."""
    import textwrap

    return "<br>".join(textwrap.wrap(text, width)) or text


def map_layer(
    values: Any,
    *,
    cell: Sequence[float] | Any | None = None,
    name: str = "map",
    colorbar_title: str | None = None,
    opacity: float = 0.5,
    colorscale: str = "Viridis",
    visible: bool = True,
    showscale: bool = True,
) -> go.Heatmap:
    """The map as a heatmap trace (layer ``map``); cell ``(row, col)`` covers
    ``[col * w, (col + 1) * w] x [row * h, (row + 1) * h]`` in image pixels (``cell = (h, w)``,
    default one pixel), like the image's pixels."""
    z = to_numpy(values)
    if z.ndim != 2:
        raise ValueError(f"a map must be (H, W), got {z.shape}")
    height, width = _cell(cell)
    return go.Heatmap(
        z=z, x0=width / 2, dx=width, y0=height / 2, dy=height, name=name, opacity=opacity,
        colorscale=colorscale, visible=visible, showscale=showscale,
        colorbar=dict(title=dict(text=colorbar_title or name, side="right"), len=0.75),
        hovertemplate=f"x %{{x}}, y %{{y}}<br>{name} %{{z:.3f}}<extra></extra>",
        meta={"layer": MAP_LAYER},
    )


def map_overlay_figure(
    values: Any,
    *,
    cell: Sequence[float] | Any | None = None,
    image: Any = None,
    boxes: Any = None,
    name: str = "map",
    colorbar_title: str | None = None,
    opacity: float = 0.5,
    title: str | None = None,
    height: int = 640,
) -> go.Figure:
    """The map over the ``image`` (when given), with optional ``boxes`` (N, 4) outlined in
    white. A per-pixel map (``cell=None``) must have the image's size; a map of cells must cover
    it. ``title`` defaults to ``name`` (``""``: none)."""
    z = to_numpy(values)
    cell_h, cell_w = _cell(cell)
    fig = go.Figure()
    rows, cols = z.shape[0] * cell_h, z.shape[1] * cell_w
    if image is not None:
        pixels = to_image(image)
        if cell is None and pixels.shape[:2] != z.shape:
            raise ValueError(f"image {pixels.shape[:2]} and map {z.shape} differ in size")
        if cell is not None and (rows < pixels.shape[0] - 1e-6 or cols < pixels.shape[1] - 1e-6):
            raise ValueError(f"the map's cells cover {rows:g} x {cols:g} pixels, less than the image {pixels.shape[:2]}")
        fig.add_trace(image_layer(pixels))
        rows, cols = pixels.shape[:2]
    fig.add_trace(map_layer(z, cell=cell, name=name, colorbar_title=colorbar_title,
                            opacity=opacity if image is not None else 1.0))
    if boxes is not None:
        fig.add_trace(box_layer(boxes, name="boxes", layer="gt", color="white"))
    fig.update_layout(title=name if title is None else title, height=height)
    return fit_axes(fig, int(round(rows)), int(round(cols)))


def map_panels_figure(
    record: Mapping[str, Any],
    views: Sequence[Any],
    *,
    image: Any = None,
    boxes: Any = None,
    columns: int = 3,
    opacity: float = 0.6,
    panel_height: int = 320,
    title: str | None = "",
) -> go.Figure:
    """One panel per heatmap view (:class:`workbench.methods.RecordView` of kind ``heatmap``)
    of one map ``record``: the view's field over the ``image``, ``boxes`` outlined, each panel
    titled by the view's label (and what a higher value means). Views whose field the record
    lacks are left out."""
    chosen = [v for v in views if v.kind == "heatmap" and v.value_field in record]
    if not chosen:
        raise ValueError("none of the heatmap views is in the record")
    from workbench.inspection.maps import cell_size

    ncols = min(columns, len(chosen))
    nrows = -(-len(chosen) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[_wrap(v.title, 48) for v in chosen],
                        horizontal_spacing=0.06, vertical_spacing=0.12)
    fig.update_annotations(font_size=11)
    pixels = to_image(image) if image is not None else None
    for k, view in enumerate(chosen):
        row, col = k // ncols + 1, k % ncols + 1
        values = to_numpy(record[view.value_field])
        cell = cell_size(record, view.value_field)
        cell_h, cell_w = _cell(cell)
        height, width = (pixels.shape[:2] if pixels is not None else (values.shape[0] * cell_h, values.shape[1] * cell_w))
        layer = map_layer(values, cell=cell, name=view.layer_name, colorbar_title=view.layer_name,
                          opacity=opacity if pixels is not None else 1.0)
        subplot = fig.get_subplot(row, col)
        x_domain, y_domain = subplot.xaxis.domain, subplot.yaxis.domain
        layer.colorbar.update(x=x_domain[1] + 0.003, y=(y_domain[0] + y_domain[1]) / 2, yanchor="middle",
                              len=(y_domain[1] - y_domain[0]) * 0.9, thickness=10)
        add_map_panel(fig, row, col, layer, pixels, boxes, width, height)
    fig.update_layout(title=title, height=panel_height * nrows + 80, showlegend=False)
    return fig


def add_map_panel(fig: go.Figure, row: int, col: int, layer: go.Heatmap, pixels: Any, boxes: Any,
                  width: float, height: float) -> None:
    """One panel of a grid of maps: the image ``pixels`` (when given) under the map ``layer``,
    the ground-truth ``boxes`` (when given) outlined in white over both, and the axes fitted to
    the ``width`` x ``height`` pixels of the image (:func:`image_panel_axes`)."""
    if pixels is not None:
        fig.add_trace(image_layer(pixels), row=row, col=col)
    fig.add_trace(layer, row=row, col=col)
    if boxes is not None:
        fig.add_trace(box_layer(boxes, name="boxes", layer="gt", color="white"), row=row, col=col)
    image_panel_axes(fig, row, col, width, height)


def image_panel_axes(fig: go.Figure, row: int, col: int, width: float, height: float) -> None:
    """Fit one subplot's axes to an image of ``width`` x ``height`` pixels: y pointing down,
    square pixels, no ticks or grid."""
    anchor = fig.get_subplot(row, col).yaxis.anchor
    fig.update_xaxes(range=[0, width], showticklabels=False, showgrid=False, zeroline=False, constrain="domain",
                     row=row, col=col)
    fig.update_yaxes(range=[height, 0], showticklabels=False, showgrid=False, zeroline=False,
                     scaleanchor=anchor, scaleratio=1, row=row, col=col)


__all__ = ["MAP_LAYER", "add_map_panel", "image_panel_axes", "map_layer", "map_overlay_figure", "map_panels_figure"]
