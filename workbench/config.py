"""Typed training configuration.

A preset is a plain function returning a ``TrainConfig``; command-line flags and papermill
parameters are applied on top with ``apply_overrides``. The resolved config is written to every
run directory as JSON and read back with ``train_config_from_dict``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import ConfigError


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.02  # learning rate for `reference_batch_size` images; scaled linearly
    reference_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip_norm: float | None = None  # clip the global gradient norm; None: no clipping


@dataclass
class ScheduleConfig:
    epochs: int = 12
    warmup_iters: int = 500  # linear warm-up from warmup_factor * lr
    warmup_factor: float = 1e-3
    decay: str = "step"  # step | cosine | constant
    milestones: tuple[int, ...] = (8, 11)  # epochs after which the lr is multiplied by gamma
    gamma: float = 0.1
    min_lr_factor: float = 0.0  # cosine decays to this fraction of the lr


#: Values of ``DataConfig.augmentation``.
AUGMENTATIONS = ("method", "flip")


@dataclass
class DataConfig:
    spec: str = "builtin:shapes"
    train_split: str = "train"
    val_split: str = "val"
    hflip_prob: float = 0.5
    num_workers: int = 0
    max_train_images: int | None = None  # a fixed subset (the first N), for quick runs
    max_val_images: int | None = None
    # Training augmentation: "method" (the method's own, e.g. SSD's photometric distortion,
    # expansion and min-IoU crop) or "flip" (the horizontal flip alone, with hflip_prob).
    augmentation: str = "method"

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATIONS:
            raise ConfigError(f"unknown augmentation {self.augmentation!r}: use {' or '.join(AUGMENTATIONS)}")


@dataclass
class TrainConfig:
    method: str
    preset: str
    model: Any  # the method's own model config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch_size: int = 2  # images per process
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str | None = None  # None | bf16 | fp16 (CUDA only)
    eval_every_epochs: int = 1
    log_every_steps: int = 20
    deterministic: bool = True  # deterministic algorithms where torch has them
    metric: str = "coco"  # coco | voc07: what per-epoch evaluation reports and `best` is chosen by
    # Record, every N steps, how the box stage sampled its RoIs on the first images of the batch
    # (RUN/train_sampling; see workbench.engine.sampling_trace). 0: off.
    trace_sampling_every: int = 0
    trace_sampling_images: int = 2  # images of the batch recorded each time

    def effective_lr(self, world_size: int = 1) -> float:
        total_batch = self.batch_size * world_size
        return self.optimizer.lr * total_batch / self.optimizer.reference_batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        if isinstance(value, dict) and dataclasses.is_dataclass(hints.get(name)):
            # a config that holds another one (e.g. a method's config around the baseline's)
            value = _from_dict(hints[name], value)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)


def train_config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Inverse of ``TrainConfig.to_dict`` (the method registry supplies the model config type)."""
    from workbench.methods import get_method

    values = dict(values)
    method = get_method(values["method"])
    return TrainConfig(
        model=_from_dict(method.model_config_type, values.pop("model")),
        data=_from_dict(DataConfig, values.pop("data")),
        optimizer=_from_dict(OptimizerConfig, values.pop("optimizer")),
        schedule=_from_dict(ScheduleConfig, values.pop("schedule")),
        **values,
    )


def apply_overrides(
    cfg: TrainConfig,
    *,
    data: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    device: str | None = None,
    seed: int | None = None,
    amp: str | None = None,
    optimizer: str | None = None,
    max_train_images: int | None = None,
    max_val_images: int | None = None,
    trace_sampling_every: int | None = None,
) -> TrainConfig:
    """Flat overrides, as the command line and papermill give them. ``lr`` is taken literally
    for the given batch (it sets the reference batch size to the batch size)."""
    cfg = dataclasses.replace(cfg)
    if data is not None:
        cfg.data = dataclasses.replace(cfg.data, spec=data)
    if max_train_images is not None:
        cfg.data = dataclasses.replace(cfg.data, max_train_images=max_train_images)
    if max_val_images is not None:
        cfg.data = dataclasses.replace(cfg.data, max_val_images=max_val_images)
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {epochs}")
        old = cfg.schedule
        # Keep the decay milestones at the same fraction of the schedule.
        milestones = tuple(max(1, round(m * epochs / old.epochs)) for m in old.milestones)
        cfg.schedule = dataclasses.replace(old, epochs=epochs, milestones=milestones)
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        cfg.batch_size = batch_size
    if lr is not None:
        if not lr > 0:
            raise ConfigError(f"learning rate must be positive, got {lr}")
        cfg.optimizer = dataclasses.replace(cfg.optimizer, lr=lr, reference_batch_size=cfg.batch_size)
    if optimizer is not None:
        if optimizer not in ("sgd", "adam", "adamw"):
            raise ConfigError(f"unknown optimizer {optimizer!r}: use sgd, adam or adamw")
        cfg.optimizer = dataclasses.replace(cfg.optimizer, name=optimizer)
    if device is not None:
        cfg.device = device
    if trace_sampling_every is not None:
        if trace_sampling_every < 0:
            raise ConfigError(f"trace_sampling_every must be >= 0 (0: off), got {trace_sampling_every}")
        cfg.trace_sampling_every = trace_sampling_every
    if seed is not None:
        cfg.seed = seed
    if amp is not None:
        if amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"unknown amp mode {amp!r}: use none, bf16 or fp16")
        cfg.amp = None if amp == "none" else amp
    return cfg
