"""Checkpoints written atomically (:func:`workbench.atomic.atomic_output`: a uniquely named
temporary file in the same folder, fsync, then rename), so a crash never leaves a half-written
file in place of a good one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workbench.atomic import atomic_output
from workbench.errors import WorkbenchError


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`workbench.atomic.atomic_output`."""
    with atomic_output(path) as f:
        torch.save(obj, f)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.exists():
        raise WorkbenchError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise WorkbenchError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc})") from exc


def rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
