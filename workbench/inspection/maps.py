"""Map records over the image: from the grid they are stored on to original-image pixels.

A map record (e.g. :data:`workbench.records.UNCERTAINTY_MAP`) holds 2-D maps ``(R, C)`` and,
when they are coarser than the image, ``cell_size`` (2,): a cell's ``(height, width)`` in
original-image pixels (:data:`workbench.records.MAP_CELL_SIZE`). Maps are stored small and
spread over the pixels only when shown (a FiftyOne heatmap, a figure over the image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from workbench import records as R


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if not value.is_floating_point() and value.dtype != torch.bool:
            return value.numpy()
        return value.double().numpy()
    return np.asarray(value)


def cell_size(record: Mapping[str, Any]) -> tuple[float, float] | None:
    """The record's ``(cell height, cell width)`` in original-image pixels (``None``: per pixel)."""
    value = record.get(R.MAP_CELL_SIZE)
    if value is None:
        return None
    height, width = (float(v) for v in _numpy(value).reshape(-1)[:2])
    return height, width


def map_to_pixels(values: Any, cell: Sequence[float] | None, orig_size: Sequence[int]) -> np.ndarray:
    """A map ``(R, C)`` on cells of ``cell = (height, width)`` original-image pixels ->
    ``(H, W)`` = ``orig_size``: pixel ``(i, j)`` takes the cell holding its centre
    ``(i + 0.5, j + 0.5)`` (indices clamped to the map). ``cell=None``: the map must already be
    ``(H, W)``."""
    z = _numpy(values)
    if z.ndim != 2:
        raise ValueError(f"a map must be (R, C), got {z.shape}")
    height, width = int(orig_size[0]), int(orig_size[1])
    if cell is None:
        if z.shape != (height, width):
            raise ValueError(f"a map without a cell size must be the image's size {height, width}, got {z.shape}")
        return z
    rows = np.clip(np.floor((np.arange(height) + 0.5) / float(cell[0])).astype(np.int64), 0, z.shape[0] - 1)
    cols = np.clip(np.floor((np.arange(width) + 0.5) / float(cell[1])).astype(np.int64), 0, z.shape[1] - 1)
    return z[rows][:, cols]


def record_map_pixels(record: Mapping[str, Any], field: str, orig_size: Sequence[int]) -> np.ndarray:
    """Field ``field`` of a map record spread over the original image (:func:`map_to_pixels`)."""
    return map_to_pixels(record[field], cell_size(record), orig_size)


__all__ = ["cell_size", "map_to_pixels", "record_map_pixels"]
