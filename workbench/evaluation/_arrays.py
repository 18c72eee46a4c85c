"""Conversion of tensors, arrays and lists to NumPy arrays for the evaluation code.

Evaluation runs on the host in NumPy and never imports torch: a tensor is recognised by its
``detach`` method and copied to the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def as_numpy(values: Any, dtype: Any = np.float64) -> np.ndarray:
    """Return ``values`` (tensor, array, list) as a NumPy array of ``dtype``."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def as_boxes(values: Any, what: str) -> np.ndarray:
    """Return ``values`` as an ``(N, 4)`` float64 array; an empty input gives ``(0, 4)``."""
    boxes = as_numpy(values)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4), got {tuple(boxes.shape)}")
    return boxes


def as_vector(values: Any, length: int, what: str, dtype: Any = np.float64) -> np.ndarray:
    """Return ``values`` as a 1-D array of ``length`` entries of ``dtype``."""
    vector = as_numpy(values, dtype=dtype).reshape(-1)
    if vector.shape[0] != length:
        raise ValueError(f"{what} has {vector.shape[0]} entries, expected {length}")
    return vector


def field(record: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a mapping (``record[name]``) or an object (``record.name``)."""
    if isinstance(record, Mapping):
        return record[name] if name in record else default
    return getattr(record, name, default)
