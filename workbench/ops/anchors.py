"""Anchors: cell anchors (the A shapes of one feature-map location) laid over feature maps.

Conventions:
- ``feature_sizes`` are ``(h, w)`` per level; strides ``(stride_h, stride_w)`` per level (an
  int means the same stride both ways); ``image_size`` is ``(height, width)``;
- anchors are absolute xyxy; a level's anchors are ``(h * w * A, 4)`` ordered ``(y, x, a)``:
  row-major over locations, then the A cell anchors of a location. This is torchvision's
  ``AnchorGenerator`` order, so they line up with head outputs laid out ``(N, H, W, A, ...)``;
- FPN (torchvision) cell anchors are centred on ``(0, 0)`` so anchor centres fall on
  ``(x * stride_w, y * stride_h)``; SSD-style anchors are centred on
  ``((x + 0.5) * stride_w, (y + 0.5) * stride_h)``;
- aspect ratio: torchvision's FPN anchors use ``ratio = h / w``; SSD / RefineDet use
  ``ratio = w / h`` (Liu et al., SSD; the Caffe ``PriorBox`` layer). Each function says which.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "fpn_cell_anchors",
    "grid_anchors",
    "feature_strides",
    "anchors_for_images",
    "ssd_cell_anchors",
    "ssd_anchors",
]

Stride = Union[int, float, Sequence[Union[int, float]], Tensor]


def fpn_cell_anchors(
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[Tensor]:
    """Cell anchors of each level, centred on (0, 0): ``[(len(ratios) * len(sizes), 4)]``.

    For ratio ``r = h / w`` and size ``s``: ``w = s / sqrt(r)``, ``h = s * sqrt(r)``; rows are
    ratio-major (``[r0 s0, r0 s1, ..., r1 s0, ...]``) and coordinates are rounded to integers,
    exactly as ``torchvision.models.detection.anchor_utils.AnchorGenerator.generate_anchors``.
    """
    if len(sizes) != len(aspect_ratios):
        raise ValueError(f"{len(sizes)} levels of sizes but {len(aspect_ratios)} levels of aspect ratios")
    cells = []
    for level_sizes, level_ratios in zip(sizes, aspect_ratios):
        scales = torch.as_tensor(level_sizes, dtype=dtype, device=device)
        ratios = torch.as_tensor(level_ratios, dtype=dtype, device=device)
        h_factor = torch.sqrt(ratios)
        w_factor = 1 / h_factor
        widths = (w_factor[:, None] * scales[None, :]).reshape(-1)
        heights = (h_factor[:, None] * scales[None, :]).reshape(-1)
        cells.append((torch.stack((-widths, -heights, widths, heights), dim=1) / 2).round())
    return cells


def _pair(stride: Stride) -> tuple[float, float]:
    if isinstance(stride, Tensor):
        stride = stride.tolist()
    if isinstance(stride, (int, float)):
        return stride, stride
    stride_h, stride_w = stride
    if isinstance(stride_h, Tensor):
        stride_h = stride_h.item()
    if isinstance(stride_w, Tensor):
        stride_w = stride_w.item()
    return stride_h, stride_w


def grid_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[Stride],
    cell_anchors: Sequence[Tensor],
) -> list[Tensor]:
    """Cell anchors shifted to every location of each level: ``[(h * w * A, 4)]``.

    Location ``(y, x)`` adds ``(x * stride_w, y * stride_h)`` to the cell anchors; order
    ``(y, x, a)``. Output dtype and device are those of ``cell_anchors``. Shifts are exact
    integers for integer strides, so the result equals torchvision's ``grid_anchors``.
    """
    if not len(feature_sizes) == len(strides) == len(cell_anchors):
        raise ValueError(
            f"got {len(feature_sizes)} feature sizes, {len(strides)} strides, {len(cell_anchors)} cell anchor sets"
        )
    anchors = []
    for (height, width), stride, cells in zip(feature_sizes, strides, cell_anchors):
        stride_h, stride_w = _pair(stride)
        device = cells.device
        shift_x = (torch.arange(int(width), device=device, dtype=torch.float64) * stride_w).to(cells.dtype)
        shift_y = (torch.arange(int(height), device=device, dtype=torch.float64) * stride_h).to(cells.dtype)
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
        grid_x = grid_x.reshape(-1)
        grid_y = grid_y.reshape(-1)
        shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=1)
        anchors.append((shifts[:, None, :] + cells[None, :, :]).reshape(-1, 4))
    return anchors


def feature_strides(image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Stride of each level of a padded batch: ``(H // h, W // w)`` (torchvision's rule)."""
    height, width = int(image_size[0]), int(image_size[1])
    return [(height // int(h), width // int(w)) for h, w in feature_sizes]


def anchors_for_images(
    image_size: tuple[int, int],
    feature_sizes: Sequence[tuple[int, int]],
    cell_anchors: Sequence[Tensor],
    num_images: int,
) -> list[Tensor]:
    """Anchors of each image of a padded batch, levels concatenated: ``num_images x (sum_l h_l w_l A_l, 4)``.

    ``image_size`` is the padded batch size ``(H, W)``; strides follow :func:`feature_strides`.
    Equals the output of torchvision's ``AnchorGenerator`` for an ``ImageList`` of that size
    and feature maps of those sizes (every image of a batch shares the same anchors).
    """
    strides = feature_strides(image_size, feature_sizes)
    anchors = torch.cat(grid_anchors(feature_sizes, strides, cell_anchors))
    return [anchors.clone() for _ in range(num_images)]


def ssd_cell_anchors(
    anchor_size: float,
    aspect_ratios: Sequence[float],
    stride: Stride,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """SSD-style cell anchors of one level, centred on ``(stride_w / 2, stride_h / 2)``: ``(A, 4)``.

    For ratio ``r = w / h``: ``w = anchor_size * sqrt(r)``, ``h = anchor_size / sqrt(r)``; one
    row per ratio, in the given order.
    """
    stride_h, stride_w = _pair(stride)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float64)
    widths = anchor_size * torch.sqrt(ratios)
    heights = anchor_size / torch.sqrt(ratios)
    cx, cy = stride_w / 2, stride_h / 2
    cells = torch.stack((cx - widths / 2, cy - heights / 2, cx + widths / 2, cy + heights / 2), dim=1)
    return cells.to(dtype=dtype, device=device)


def ssd_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[Stride],
    image_size: tuple[int, int],
    anchor_sizes: Sequence[float],
    aspect_ratios: Sequence[float] | Sequence[Sequence[float]],
    clip: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """SSD / RefineDet anchors of all levels, concatenated: ``(sum_l h_l * w_l * A_l, 4)`` xyxy.

    Level ``l`` has one size ``anchor_sizes[l]`` times its aspect ratios (``w / h``); centres
    are ``((x + 0.5) * stride_w, (y + 0.5) * stride_h)``; order: level, then ``(y, x, a)``.
    ``aspect_ratios`` is one list for every level or one list per level. ``clip`` clamps the
    anchors to ``image_size`` (h, w). RefineDet: strides 8, 16, 32, 64, sizes ``4 * stride``,
    ratios (0.5, 1, 2).
    """
    num_levels = len(feature_sizes)
    if len(strides) != num_levels or len(anchor_sizes) != num_levels:
        raise ValueError(
            f"got {num_levels} feature sizes, {len(strides)} strides and {len(anchor_sizes)} anchor sizes"
        )
    if len(aspect_ratios) > 0 and isinstance(aspect_ratios[0], (int, float)):
        per_level = [tuple(aspect_ratios)] * num_levels  # type: ignore[arg-type]
    else:
        per_level = [tuple(r) for r in aspect_ratios]  # type: ignore[union-attr]
        if len(per_level) != num_levels:
            raise ValueError(f"{len(per_level)} levels of aspect ratios for {num_levels} feature maps")
    cells = [
        ssd_cell_anchors(size, ratios, stride, dtype=dtype, device=device)
        for size, ratios, stride in zip(anchor_sizes, per_level, strides)
    ]
    anchors = torch.cat(grid_anchors(feature_sizes, strides, cells))
    if clip:
        height, width = image_size
        anchors = torch.stack(
            (
                anchors[:, 0].clamp(0, width),
                anchors[:, 1].clamp(0, height),
                anchors[:, 2].clamp(0, width),
                anchors[:, 3].clamp(0, height),
            ),
            dim=1,
        )
    return anchors
