"""Reading a trained run back: its config, a checkpoint, the model built from them, the dataset.

- :func:`load_run_config`: the run's resolved ``TrainConfig`` (``RUN/config.json``);
- :func:`load_trained_model`: ``(model in eval mode, config, checkpoint dict)``;
- :func:`open_trained_run`: all of it plus the dataset split to predict on, as a
  :class:`TrainedRun` (what ``workbench predict`` / ``evaluate`` / ``export`` start from).

- :func:`figure_model`: a run's model and dataset, or without a run a freshly built, untrained
  model of a method's ``tiny`` preset (:func:`untrained_model`) and a dataset: what the method
  analyses draw their figures on, before and after a run exists.

``which`` is ``best`` (falling back to ``last`` when a run has no evaluation yet), ``last``, or
the path of a checkpoint file.
"""

from __future__ import annotations

import dataclasses
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
    run_dir: Path | str, which: str = "best", device: str | torch.device = "cpu",
    model_overrides: dict[str, Any] | None = None,
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """(model in eval mode on ``device``, config, checkpoint) of a finished or interrupted run.

    ``model_overrides`` replace fields of the model config before the model is built: settings
    that leave the parameters as they are (an inference switch such as IoU-uniform R-CNN's
    ``repool``, a score threshold); the checkpoint must still load into the model."""
    from workbench.methods import get_method

    cfg = load_run_config(run_dir)
    if model_overrides:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model_overrides))
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
    device: str | torch.device = "auto", model_overrides: dict[str, Any] | None = None,
) -> TrainedRun:
    """The run's model from checkpoint ``which`` and split ``split`` (default the run's
    validation split) of ``data`` (default the run's own dataset), with the method's evaluation
    transforms; ``model_overrides`` as in :func:`load_trained_model`."""
    from workbench.data.sources import open_dataset
    from workbench.methods import get_method

    dev = resolve_device(device)
    model, cfg, state = load_trained_model(run_dir, which, dev, model_overrides)
    split = split or cfg.data.val_split
    spec = data or cfg.data.spec
    dataset = open_dataset(spec, split, transforms=get_method(cfg.method).evaluation_transforms(cfg))
    return TrainedRun(Path(run_dir), which, model, cfg, state, dataset, spec, split, dev)


def replace_base(model_cfg: Any, **overrides: Any) -> Any:
    """``model_cfg`` with ``overrides`` applied to its baseline config: ``base`` (held at any
    depth, e.g. the IoU-uniform cascade's ``cascade.base``), or the config itself when it is the
    baseline's."""
    for name in ("cascade", "base"):
        inner = getattr(model_cfg, name, None)
        if dataclasses.is_dataclass(inner):
            return dataclasses.replace(model_cfg, **{name: replace_base(inner, **overrides)})
    return dataclasses.replace(model_cfg, **overrides)


def untrained_model(method: str, num_classes: int, **base_overrides: Any) -> nn.Module:
    """A freshly built model of ``method``'s ``tiny`` preset without pretrained weights (batch
    norm trainable), with ``base_overrides`` applied to its baseline config (e.g.
    ``min_size=96``), in evaluation mode."""
    from workbench.methods import build_preset, get_method

    cfg = replace_base(build_preset(method, "tiny").model, backbone_weights=None, backbone_norm="bn",
                       **base_overrides)
    return get_method(method).build_model(cfg, num_classes).eval()


#: The images a figure is drawn on before any run exists (``data=None``): 8 training and 4
#: validation images of the built-in shapes at 96 px, generated in a second on first use.
PREVIEW_DATA = "builtin:shapes?train=8&val=4&size=96"


@dataclass
class FigureModel:
    """A model (evaluation mode, on ``device``) and the dataset to compute figures on; ``source``
    says which, in words (a run's checkpoint or a freshly built model)."""

    model: nn.Module
    dataset: Any
    source: str
    device: torch.device


def figure_model(
    run_dir: Path | str | None = None,
    *,
    method: str,
    data: str | None = None,
    split: str | None = None,
    min_size: int = 96,
    seed: int = 0,
    device: str = "cpu",
    which: str = "best",
) -> FigureModel:
    """With ``run_dir``, the run's checkpoint ``which`` (``best`` or ``last``) and its ``split``
    (default its validation split); without, a freshly built ``method`` (:func:`untrained_model`,
    seeded by ``seed``, inputs of ``min_size`` pixels) and split ``split`` (default ``val``) of
    ``data`` (default :data:`PREVIEW_DATA`): its untrained heads give meaningless outputs, but
    every figure can be drawn before a run exists."""
    if run_dir is not None:
        run = open_trained_run(run_dir, which, split=split, device=device)
        return FigureModel(run.model, run.dataset, f"{run.cfg.method} run {run_dir} ({run.split})", run.device)
    from workbench.data.sources import open_dataset

    dataset = open_dataset(data or PREVIEW_DATA, split or "val", progress=False)
    torch.manual_seed(seed)
    model = untrained_model(method, len(dataset.class_names), min_size=min_size, max_size=min_size)
    dev = torch.device(device)
    return FigureModel(model.to(dev), dataset, f"freshly built {method} (untrained)", dev)


__all__ = ["FigureModel", "PREVIEW_DATA", "TrainedRun", "checkpoint_path", "figure_model", "load_run_config",
           "load_trained_model", "open_trained_run", "replace_base", "resolve_device", "untrained_model"]
