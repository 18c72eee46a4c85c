"""Flat notebook parameters (what papermill and pipeline files pass) -> a ``TrainConfig``.

``model_overrides`` is a dict of model config fields (``{"min_size": 96, "fpn_channels": 32}``).
A method whose model config wraps the baseline's (KL-RPN: ``KLRPNConfig(base=FasterRCNNConfig)``)
takes each key where it is defined: on the method's own config first, else on the wrapped one,
so the same overrides work for every method. Lists become tuples (``anchor_sizes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from workbench.config import TrainConfig, apply_overrides
from workbench.errors import ConfigError


def as_tuples(value: Any) -> Any:
    """Lists (as YAML and JSON give them), at any depth, as tuples."""
    if isinstance(value, (list, tuple)):
        return tuple(as_tuples(v) for v in value)
    return value


def _nested_configs(cfg: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]


def _all_fields(cfg: Any) -> set[str]:
    """The field names of ``cfg`` and of the configs it holds, at any depth."""
    names = {f.name for f in dataclasses.fields(cfg)}
    for name in _nested_configs(cfg):
        names |= _all_fields(getattr(cfg, name))
    return names


def override_model(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """A copy of the model config ``cfg`` with ``overrides`` applied (see the module docstring).
    Raises ``ConfigError`` for a field no config in ``cfg`` has."""
    own = {f.name for f in dataclasses.fields(cfg)}
    here = {k: as_tuples(v) for k, v in overrides.items() if k in own}
    rest = {k: v for k, v in overrides.items() if k not in own}
    changes = dict(here)
    for name in _nested_configs(cfg):
        inner = getattr(cfg, name)
        inner_fields = _all_fields(inner)
        taken = {k: v for k, v in rest.items() if k in inner_fields}
        if taken:
            changes[name] = override_model(inner, taken)
            rest = {k: v for k, v in rest.items() if k not in taken}
    if rest:
        raise ConfigError(f"unknown model config fields {sorted(rest)} for {type(cfg).__name__}")
    return dataclasses.replace(cfg, **changes)


def train_config(
    method: str,
    preset: str,
    *,
    model_overrides: Mapping[str, Any] | None = None,
    log_every_steps: int | None = None,
    **overrides: Any,
) -> TrainConfig:
    """The preset ``method``/``preset`` with the flat overrides of the train notebook:
    ``overrides`` are those of :func:`workbench.config.apply_overrides` (``data``, ``epochs``,
    ``batch_size``, ``lr``, ``device``, ``seed``, ``max_train_images``, ``max_val_images``, ...),
    ``model_overrides`` go to :func:`override_model`."""
    from workbench.methods import build_preset

    cfg = apply_overrides(build_preset(method, preset), **overrides)
    if model_overrides:
        cfg = dataclasses.replace(cfg, model=override_model(cfg.model, model_overrides))
    if log_every_steps is not None:
        cfg = dataclasses.replace(cfg, log_every_steps=int(log_every_steps))
    return cfg
