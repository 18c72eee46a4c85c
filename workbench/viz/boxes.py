"""Building blocks of the image figures: arrays from tensors, box outlines, the image itself.

Conventions: boxes are absolute ``xyxy`` pixels of the original image, ``(N, 4)``; images are
``(H, W, 3)`` uint8 (a ``(3, H, W)`` tensor is accepted and transposed). Every layer of a figure
is one ``go.Scatter`` whose ``meta`` is ``{"layer": <name>}``, so widgets can find and toggle it.

A box layer is drawn as one trace: each box is a closed path of 5 corners followed by a gap
(``NaN``), so thousands of boxes cost one trace. Each corner carries the box's hover text.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

#: Colours of the classes (label ``k`` takes entry ``(k - 1) % len``).
CLASS_COLORS = qualitative.Plotly
#: Points per box in an outline trace: 5 corners (closed) and one gap.
POINTS_PER_BOX = 6


def to_numpy(values: Any, dtype: Any = float) -> np.ndarray:
    """A tensor, array or sequence as a NumPy array of ``dtype`` (tensors are detached, moved
    to the CPU)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def to_boxes(values: Any) -> np.ndarray:
    """``(N, 4)`` float boxes (``None`` or an empty input gives ``(0, 4)``)."""
    if values is None:
        return np.zeros((0, 4))
    boxes = to_numpy(values)
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {boxes.shape}")
    return boxes


def to_image(image: Any) -> np.ndarray:
    """``(H, W, 3)`` uint8 from an ``(H, W, 3)`` array or a ``(3, H, W)`` tensor / array."""
    pixels = to_numpy(image, dtype=None)
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3) and pixels.shape[-1] not in (1, 3):
        pixels = np.transpose(pixels, (1, 2, 0))
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
        raise ValueError(f"an image must be (H, W, 3) or (3, H, W), got {pixels.shape}")
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if pixels.dtype != np.uint8:
        scale = 255.0 if pixels.max(initial=0) <= 1.0 else 1.0
        pixels = np.clip(pixels * scale, 0, 255).astype(np.uint8)
    return pixels


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """The name of a contiguous label ``1..C`` (``class_names[label - 1]``), else ``"class k"``."""
    if class_names is not None and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return f"class {label}"


def class_color(label: int) -> str:
    """A stable colour per label."""
    return CLASS_COLORS[(int(label) - 1) % len(CLASS_COLORS)]


def outline_coordinates(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the closed outlines of ``boxes`` (N, 4): ``6 N`` values each, a ``NaN`` gap
    after every box."""
    x0, y0, x1, y1 = (boxes[:, i : i + 1] for i in range(4))
    gap = np.full_like(x0, np.nan)
    xs = np.concatenate([x0, x1, x1, x0, x0, gap], axis=1).reshape(-1)
    ys = np.concatenate([y0, y0, y1, y1, y0, gap], axis=1).reshape(-1)
    return xs, ys


def per_point(values: Sequence[Any], points: int = POINTS_PER_BOX) -> list[Any]:
    """Repeat each value ``points`` times (one per outline point of its box)."""
    return [v for v in values for _ in range(points)]


def box_layer(
    boxes: Any,
    *,
    name: str,
    layer: str,
    color: str,
    hover: Sequence[str] | None = None,
    width: float = 1.5,
    dash: str | None = None,
    opacity: float = 1.0,
    visible: bool = True,
    extra_meta: dict | None = None,
    marker: dict | None = None,
) -> go.Scatter:
    """One trace outlining every box; ``hover`` gives one text per box; ``marker`` (e.g.
    :func:`value_marker`) adds a marker at every corner."""
    arr = to_boxes(boxes)
    xs, ys = outline_coordinates(arr)
    texts = per_point(hover) if hover is not None else None
    meta = {"layer": layer, "count": int(arr.shape[0]), **(extra_meta or {})}
    return go.Scatter(
        x=xs, y=ys, mode="lines" if marker is None else "lines+markers", name=f"{name} ({arr.shape[0]})",
        legendgroup=layer, line=dict(color=color, width=width, dash=dash), opacity=opacity, marker=marker,
        hovertext=texts, hoverinfo="text" if texts is not None else "skip",
        meta=meta, visible=visible, connectgaps=False,
    )


def value_marker(
    values: Any,
    *,
    title: str,
    value_range: tuple[float, float] | None = None,
    colorscale: str = "Viridis",
    size: float = 7.0,
    colorbar_x: float | None = None,
) -> dict:
    """Corner markers of a :func:`box_layer` coloured by one value per box, with a colour bar
    titled ``title``. ``value_range`` fixes the colour scale (e.g. over every image of a run, so
    a colour means the same value on each); default: the values' own finite range.
    ``colorbar_x``: the colour bar's position (paper coordinates; beside another one's)."""
    values = to_numpy(values).reshape(-1)
    finite = values[np.isfinite(values)]
    if value_range is None:
        value_range = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    low, high = value_range
    return dict(color=per_point(values.tolist()), colorscale=colorscale, cmin=low, cmax=high if high > low else low + 1e-6,
                showscale=True, size=size, line=dict(width=0),
                colorbar=dict(title=dict(text=title, side="right"), len=0.75, x=colorbar_x))


def png_data_uri(pixels: np.ndarray) -> str:
    """An ``(H, W, 3)`` uint8 image as a ``data:image/png;base64,...`` URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_layer(image: Any) -> go.Image:
    """The picture under every other layer, embedded as a PNG (small in HTML and notebooks).
    Pixel ``(row, col)`` covers ``[col, col + 1] x [row, row + 1]``, as box coordinates do."""
    return go.Image(source=png_data_uri(to_image(image)), x0=0.5, y0=0.5, hoverinfo="skip", name="image",
                    meta={"layer": "image"})


def fit_axes(fig: go.Figure, height: int, width: int) -> go.Figure:
    """Image coordinates: x to the right, y down, square pixels, the whole image in view."""
    fig.update_xaxes(range=[0, width], showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(range=[height, 0], showgrid=False, zeroline=False, scaleanchor="x", scaleratio=1)
    return fig


def canvas_size(image: Any, image_size: tuple[int, int] | None, *box_sets: Any) -> tuple[int, int]:
    """``(height, width)`` in pixels of the picture a figure shows: the image's, else
    ``image_size``, else the extent from the origin of the boxes (``box_sets``: ``(N, 4)``
    arrays or tensors, ``None`` for none), rounded up and at least one pixel each way."""
    if image is not None:
        height, width = to_image(image).shape[:2]
        return int(height), int(width)
    if image_size is not None:
        return int(image_size[0]), int(image_size[1])
    boxes = np.concatenate([to_boxes(b) for b in box_sets] + [np.ones((1, 4))])
    return int(np.ceil(boxes[:, 3].max())), int(np.ceil(boxes[:, 2].max()))
