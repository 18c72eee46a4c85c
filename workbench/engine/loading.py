"""Reading a trained run back: its config, a checkpoint, the model built from them, the dataset.

- :func:`load_run_config`: the run's resolved ``TrainConfig`` (``RUN/config.json``);
- :func:`load_trained_model`: ``(model in eval mode, config, checkpoint dict)``;
- :func:`open_trained_run`: all of it plus the dataset split to predict on, as a
  :class:`TrainedRun` (what ``workbench predict`` / ``evaluate`` / ``export`` start from).

``which`` is ``best`` (falling back to ``last`` when a run has no evaluation yet), ``last``, or
the path of a checkpoint file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.config import TrainConfig, train_config_from_dict
from workbench.engine.checkpoint import load_checkpoint
from workbench.engine.run_dir import RunDir
from workbench.errors import ConfigError


def resolve_device(spec: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when torch sees a device, else the CPU; otherwise ``torch.device(spec)``,
    refused when it names CUDA on a machine without it."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
    return device


def load_run_config(run_dir: Path | str) -> TrainConfig:
    """The resolved config a run was trained with."""
    return train_config_from_dict(RunDir(Path(run_dir)).read_config())


def checkpoint_path(run_dir: Path | str, which: str = "best") -> Path:
    """The checkpoint file ``which`` names (``best`` falls back to ``last`` when absent)."""
    run = RunDir(Path(run_dir))
    path = run.checkpoint(which)
    if which == "best" and not path.exists():
        path = run.last_checkpoint
    return path


def load_trained_model(
    run_dir: Path | str, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """(model in eval mode on ``device``, config, checkpoint) of a finished or interrupted run."""
    from workbench.methods import get_method

    cfg = load_run_config(run_dir)
    state = load_checkpoint(checkpoint_path(run_dir, which), map_location=device)
    model = get_method(cfg.method).build_model(cfg.model, len(state["categories"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, state


@dataclass
class TrainedRun:
    """A run read back for prediction: model (eval mode, on ``device``), config, checkpoint,
    and the dataset split it predicts on."""

    run_dir: Path
    which: str
    model: nn.Module
    cfg: TrainConfig
    state: dict[str, Any]
    dataset: Any
    data_spec: str
    split: str
    device: torch.device


def open_trained_run(
    run_dir: Path | str, which: str = "best", *, data: str | None = None, split: str | None = None,
    device: str | torch.device = "auto",
) -> TrainedRun:
    """The run's model from checkpoint ``which`` and split ``split`` (default the run's
    validation split) of ``data`` (default the run's own dataset), with the method's evaluation
    transforms."""
    from workbench.data.sources import open_dataset
    from workbench.methods import get_method

    dev = resolve_device(device)
    model, cfg, state = load_trained_model(run_dir, which, dev)
    split = split or cfg.data.val_split
    spec = data or cfg.data.spec
    dataset = open_dataset(spec, split, transforms=get_method(cfg.method).evaluation_transforms(cfg))
    return TrainedRun(Path(run_dir), which, model, cfg, state, dataset, spec, split, dev)


__all__ = ["TrainedRun", "checkpoint_path", "load_run_config", "load_trained_model", "open_trained_run",
           "resolve_device"]
