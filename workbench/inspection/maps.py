"""Map records over the image: from the grid they are stored on to original-image pixels.

A map record (e.g. :data:`workbench.records.UNCERTAINTY_MAP`) holds 2-D maps ``(R, C)`` and,
when they are coarser than the image, ``cell_size`` (2,): a cell's ``(height, width)`` in
original-image pixels (:data:`workbench.records.MAP_CELL_SIZE`); a map on a coarser grid than
the record's others has its own, ``cell_size_<field>`` (:func:`cell_size`). Maps are stored
small and spread over the pixels only when shown (a FiftyOne heatmap, a figure over the image).

A *per-level* map record stores one value per anchor location of each feature level, which is
what a detector with a feature pyramid computes, and is composed into one map only when shown:

- ``<name>_level{k}``: ``(H_k, W_k)``, level ``k``'s value at each anchor location (level 0 the
  finest; location ``(y, x)`` has its anchor centre at ``(y * stride_y, x * stride_x)``
  network-input pixels, as the anchor generator places it);
- ``priority_level{k}``: ``(H_k, W_k)``, where levels overlap the level with the largest
  priority wins (ties: the finer level);
- ``level_strides``: ``(L, 2)``, each level's ``(stride_y, stride_x)`` in network-input pixels;
- ``network_size``: ``(2,)``, the image's ``(height, width)`` in network-input pixels;
- ``network_scale``: ``(2,)``, original-image pixels per network-input pixel ``(y, x)``.

:func:`as_map_record` wraps such a record in :class:`LevelMaps`, which reads like a single-grid
map record: ``record[name]`` is the composed map ``(R, C)`` on a grid whose cell is half the
smallest stride (every cell takes, on each level, the anchor location whose cell
``[(x - 1/2) * stride, (x + 1/2) * stride)`` holds the cell's centre: :func:`nearest_centre`;
then the level of largest priority), ``record["level"]`` the level each cell took and
``record["cell_size"]`` the cell in original-image pixels. The trace reader and
:func:`workbench.inspection.collect.complete_records` wrap every such record, so figures, the
FiftyOne export and the notebooks show it without knowing it is stored per level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import math

import numpy as np
import torch
from torch import Tensor

from workbench import records as R

LEVEL_SUFFIX = "_level"
PRIORITY = "priority"
LEVEL_STRIDES = "level_strides"
NETWORK_SIZE = "network_size"
NETWORK_SCALE = "network_scale"
#: The composed map's field holding the level each cell took.
LEVEL = "level"


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if not value.is_floating_point() and value.dtype != torch.bool:
            return value.numpy()
        return value.double().numpy()
    return np.asarray(value)


def cell_size(record: Mapping[str, Any], field: str | None = None) -> tuple[float, float] | None:
    """The ``(cell height, cell width)`` in original-image pixels of map ``field`` of the record:
    its own ``cell_size_<field>`` when the record has one (a map on a coarser grid than the
    others, e.g. one level's), else the record's ``cell_size`` (``None``: per pixel)."""
    value = record.get(f"{R.MAP_CELL_SIZE}_{field}") if field is not None else None
    if value is None:
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
    return map_to_pixels(record[field], cell_size(record, field), orig_size)


def nearest_centre(num_cells: int, cell: float, stride: float, num_locations: int, device=None) -> Tensor:
    """For each map cell ``k`` (covering ``[k * cell, (k + 1) * cell)``), the anchor location
    ``x`` whose cell ``[x * stride - stride / 2, x * stride + stride / 2)`` holds the cell's
    centre, clamped to ``[0, num_locations - 1]``."""
    centres = (torch.arange(num_cells, device=device, dtype=torch.float64) + 0.5) * cell
    index = torch.floor(centres / stride + 0.5).to(torch.int64)
    return index.clamp_(0, num_locations - 1)


def display_grid(record: Mapping[str, Any]) -> tuple[tuple[float, float], tuple[int, int]]:
    """The composed map's cell ``(height, width)`` in network-input pixels (half the smallest
    stride) and its ``(rows, cols)`` covering the image (the last may extend past it)."""
    strides = _numpy(record[LEVEL_STRIDES]).reshape(-1, 2)
    height, width = (float(v) for v in _numpy(record[NETWORK_SIZE]).reshape(-1)[:2])
    cell = (float(strides[:, 0].min()) / 2.0, float(strides[:, 1].min()) / 2.0)
    return cell, (math.ceil(height / cell[0]), math.ceil(width / cell[1]))


def compose_levels(record: Mapping[str, Any], name: str) -> tuple[Tensor, Tensor]:
    """``(values, level)`` of per-level map ``name`` composed on the display grid (see the
    module docstring): ``values`` float32 ``(R, C)``, ``level`` int64 ``(R, C)``."""
    (cell_y, cell_x), (rows, cols) = display_grid(record)
    strides = _numpy(record[LEVEL_STRIDES]).reshape(-1, 2)
    best_priority = best_value = best_level = None
    for level, (stride_y, stride_x) in enumerate(strides):
        priority = torch.as_tensor(record[f"{PRIORITY}{LEVEL_SUFFIX}{level}"]).float()
        value = torch.as_tensor(record[f"{name}{LEVEL_SUFFIX}{level}"]).float()
        ys = nearest_centre(rows, cell_y, float(stride_y), priority.shape[0])
        xs = nearest_centre(cols, cell_x, float(stride_x), priority.shape[1])
        priority, value = priority[ys][:, xs], value[ys][:, xs]
        if best_priority is None:
            best_priority, best_value = priority, value
            best_level = torch.zeros(priority.shape, dtype=torch.int64)
            continue
        better = priority > best_priority  # ties keep the finer level
        best_priority = torch.where(better, priority, best_priority)
        best_value = torch.where(better, value, best_value)
        best_level = torch.where(better, torch.full_like(best_level, level), best_level)
    return best_value, best_level


class LevelMaps(dict):
    """A per-level map record (see the module docstring) read like a single-grid one.

    Its items are the stored fields (what a trace writes). Indexing, ``in`` and ``get`` also
    give the composed fields: ``<name>`` for every stored ``<name>_level0``, ``level`` and
    ``cell_size``; each is computed on first use and cached outside the items."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._composed: dict[str, Tensor] = {}

    def composed_names(self) -> list[str]:
        """The fields composed on reading, besides ``level`` and ``cell_size``."""
        suffix = f"{LEVEL_SUFFIX}0"
        return [k[: -len(suffix)] for k in dict.keys(self) if k.endswith(suffix)]

    def _derivable(self, key: object) -> bool:
        return key in (LEVEL, R.MAP_CELL_SIZE) or key in self.composed_names()

    def __missing__(self, key: str) -> Tensor:
        if not self._derivable(key):
            raise KeyError(key)
        if key not in self._composed:
            self._composed[key] = self._compose(key)
        return self._composed[key]

    def _compose(self, key: str) -> Tensor:
        if key == R.MAP_CELL_SIZE:
            (cell_y, cell_x), _ = display_grid(self)
            scale_y, scale_x = (float(v) for v in _numpy(dict.__getitem__(self, NETWORK_SCALE)).reshape(-1)[:2])
            return torch.tensor([cell_y * scale_y, cell_x * scale_x], dtype=torch.float32)
        if key == LEVEL:
            return compose_levels(self, PRIORITY)[1]
        return compose_levels(self, key)[0]

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._derivable(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


def as_map_record(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """``fields`` as a :class:`LevelMaps` when they are a per-level map record (they hold
    ``level_strides``); any other record unchanged."""
    if LEVEL_STRIDES in fields and not isinstance(fields, LevelMaps):
        return LevelMaps(fields)
    return fields


__all__ = [
    "LEVEL",
    "LEVEL_STRIDES",
    "LEVEL_SUFFIX",
    "LevelMaps",
    "NETWORK_SCALE",
    "NETWORK_SIZE",
    "PRIORITY",
    "as_map_record",
    "cell_size",
    "compose_levels",
    "display_grid",
    "map_to_pixels",
    "nearest_centre",
    "record_map_pixels",
]
