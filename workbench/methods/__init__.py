"""The methods the workbench trains, each a package that adds only what differs from its
baseline. ``METHODS`` is the one registry: method name -> module defining ``METHOD``.

A ``Method`` names its model config type, a builder ``build_model(model_cfg, num_classes)`` and
its presets (plain functions returning a ``TrainConfig``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from workbench.config import TrainConfig
from workbench.errors import ConfigError

METHODS: dict[str, str] = {
    "faster_rcnn": "workbench.methods.faster_rcnn",
    "kl_rpn": "workbench.methods.kl_rpn",
    "retinanet": "workbench.methods.retinanet",
    "ssd": "workbench.methods.ssd",
}


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    model_config_type: type
    build_model: Callable[[Any, int], nn.Module]
    presets: Mapping[str, Callable[[], TrainConfig]]


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return importlib.import_module(METHODS[name]).METHOD


def build_preset(method: str, preset: str) -> TrainConfig:
    m = get_method(method)
    if preset not in m.presets:
        raise ConfigError(f"method {method!r} has no preset {preset!r}; available: {', '.join(sorted(m.presets))}")
    return m.presets[preset]()
