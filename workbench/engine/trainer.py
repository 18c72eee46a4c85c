"""Training: a small loop of (model, data loader, optimizer, hooks), and the function that builds
them from a ``TrainConfig``. One process or many (torchrun), CPU or CUDA.

- :class:`SimpleTrainer` (as detectron2's): per step, the hooks' ``before_step`` (the lr),
  forward, a finiteness check of every loss part (all ranks agree), backward through the AMP
  scaler, optional gradient clipping, the optimiser step, then ``after_step`` (metrics lines,
  progress, a stop request). Per epoch, ``after_epoch`` (evaluation, checkpoints). Everything
  but the step is a hook (:mod:`workbench.engine.hooks`).
- :class:`Trainer` / :func:`train`: set up device, process group, seed, data, model and
  optimizer from a config, register the standard hooks, and train into a run directory:
  ``last`` and ``best`` checkpoints (atomic; ``best`` by the metric the config is judged by),
  per-epoch evaluation, ``metrics.jsonl``, SIGINT / SIGTERM saving a checkpoint at the current
  step, ``resume=True`` continuing from it with the same result as an uninterrupted run (CPU).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench import distributed
from workbench.config import TrainConfig
from workbench.engine.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from workbench.engine.hooks import (
    Checkpointer,
    Evaluation,
    HookBase,
    LRSchedule,
    MetricsWriter,
    Progress,
    StepCallback,
    StepRecord,
    StopOnSignal,
    agree_max,
    peak_memory_mb,
)
from workbench.engine.inference import (
    evaluate_predictions,
    images_to_model_input,
    predict_dataset,
    targets_to_device,
    unwrap,
)
from workbench.engine.loading import load_run_config, load_trained_model, resolve_device
from workbench.engine.run_dir import RunDir
from workbench.engine.schedule import lr_factor
from workbench.engine.timing import InferenceTimer
from workbench.engine.train_loader import TrainLoader
from workbench.errors import ConfigError, WorkbenchError

log = logging.getLogger(__name__)


class NonFiniteLossError(WorkbenchError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_completed: int
    global_step: int
    best_ap: float | None  # the best value of `best_metric` (AP for runs judged by COCO AP)
    last_eval: dict[str, float] | None
    interrupted: bool = False
    best_metric: str = "AP"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=o.betas, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=o.betas, weight_decay=o.weight_decay)
    raise ConfigError(f"unknown optimizer {o.name!r}: use sgd, adam or adamw")


def autocast(device: torch.device, amp: str | None):
    """The autocast context of ``amp`` (``None``, ``bf16``, ``fp16``; CUDA only)."""
    if amp is None:
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ConfigError(f"--amp {amp} needs a CUDA device; this run is on {device}")
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class SimpleTrainer:
    """Trains ``model`` for ``epochs`` over ``loader`` with ``optimizer``; hooks do the rest.

    ``loader`` is iterable once per epoch and has ``len()`` (batches per epoch); when it has
    ``set_epoch(epoch, start_batch)`` (:class:`~workbench.engine.train_loader.TrainLoader`), it
    is called before each epoch so a resumed run continues mid-epoch. A batch is a
    ``workbench.data.collate.Batch``; the model is called as ``model(images, targets)`` and
    returns a ``DetectorOutput`` whose ``losses`` are summed.

    State read by hooks: ``epoch`` (finished epochs), ``batch_in_epoch``, ``global_step``,
    ``steps_per_epoch``, ``epochs``, ``batch`` (the batch of the current or last step),
    ``step_values`` (float loss parts, ``loss``, ``lr`` of the last step), ``step_time``,
    ``data_time``, ``stop_requested``, ``failed``.
    """

    def __init__(
        self,
        model: nn.Module,
        loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        epochs: int,
        device: torch.device | str = "cpu",
        hooks: Sequence[HookBase] = (),
        amp: str | None = None,
        grad_clip_norm: float | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model = model
        self.loader = loader
        self.optimizer = optimizer
        self.epochs = int(epochs)
        self.device = torch.device(device)
        self.amp = amp
        self.grad_clip_norm = grad_clip_norm
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.steps_per_epoch = len(loader)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.batch: Any = None
        self.step_values: dict[str, float] = {}
        self.step_time = 0.0
        self.data_time = 0.0
        self.stop_requested = False
        self.failed = False
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            if not isinstance(hook, HookBase):
                raise TypeError(f"hooks must derive from HookBase, got {type(hook).__name__}")
            hook.trainer = self
            self.hooks.append(hook)

    def request_stop(self) -> None:
        """Stop after the current step (hooks call this; the stop is clean: ``after_train``
        runs and a checkpoint hook saves)."""
        self.stop_requested = True

    def _call(self, name: str) -> None:
        for hook in self.hooks:
            getattr(hook, name)()

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> None:
        self.failed = False
        try:
            self._call("before_train")
            while self.epoch < self.epochs:
                self._call("before_epoch")
                self.run_epoch()
                if self.stop_requested:
                    break
                self.epoch += 1
                self.batch_in_epoch = 0
                self._call("after_epoch")
        except BaseException:
            self.failed = True
            raise
        finally:
            self._call("after_train")

    def run_epoch(self) -> None:
        import time

        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(self.epoch, self.batch_in_epoch)
        t_data = time.perf_counter()
        for batch in self.loader:
            self.data_time = time.perf_counter() - t_data
            self.batch = batch
            self._call("before_step")
            t0 = time.perf_counter()
            self.step_values = self.run_step(batch)
            self.global_step += 1
            self.batch_in_epoch += 1
            self.step_time = time.perf_counter() - t0
            self._call("after_step")
            if self.stop_requested:
                return
            t_data = time.perf_counter()

    def run_step(self, batch) -> dict[str, float]:
        """One optimiser step; the loss parts, the total ``loss`` and the ``lr`` as floats."""
        images = images_to_model_input(batch.images, self.device)
        targets = targets_to_device(batch.targets, self.device)
        with autocast(self.device, self.amp):
            out = self.model(images, targets)
        losses = {k: v.float() for k, v in out.losses.items()}
        values = {k: float(v.detach()) for k, v in losses.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        (any_bad,) = agree_max([float(bool(bad))], self.device)
        if any_bad:
            what = ", ".join(f"{k} = {values[k]}" for k in bad) or "on another rank"
            raise NonFiniteLossError(
                f"non-finite loss at step {self.global_step + 1} (epoch {self.epoch + 1}): {what}; training stopped"
            )
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(unwrap(self.model).parameters(), self.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values["loss"] = float(total.detach())
        values["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return values

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, scaler, counters, random generators, and every hook's state."""
        state = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
        }
        for hook in self.hooks:
            state.update(hook.state_dict())
        state["rng"] = rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.global_step = state["global_step"]
        for hook in self.hooks:
            hook.load_state_dict(state)
        set_rng_state(state["rng"])


def _load_data(cfg: TrainConfig):
    """The training split with the method's training transforms, the validation split with its
    evaluation transforms (:class:`workbench.methods.Method`)."""
    from workbench.data.sources import open_dataset
    from workbench.methods import get_method

    method = get_method(cfg.method)
    train = open_dataset(cfg.data.spec, cfg.data.train_split, transforms=method.training_transforms(cfg))
    val = open_dataset(cfg.data.spec, cfg.data.val_split, transforms=method.evaluation_transforms(cfg))
    return train, val


def _subset(n: int, limit: int | None) -> list[int]:
    return list(range(n if limit is None else min(n, limit)))


def progress_mode(progress: bool | str | None) -> str:
    """``None``: a bar on a terminal, plain lines otherwise; ``True``: ``bar``; ``False``:
    ``lines``; or ``bar`` / ``lines`` / ``off``."""
    if progress is None or progress == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    if progress is True:
        return "bar"
    if progress is False:
        return "lines"
    return str(progress)


class Trainer:
    """Trains ``cfg`` into ``run_dir``: builds a :class:`SimpleTrainer` with the standard hooks.

    ``hooks`` are extra :class:`~workbench.engine.hooks.HookBase` instances or functions of a
    :class:`~workbench.engine.hooks.StepRecord` called after every step (before the run's own
    logging). ``progress``: see :func:`progress_mode`. After :meth:`fit` (or :meth:`build`),
    ``model``, ``engine`` (the ``SimpleTrainer``), ``train_set`` and ``val_set`` are set.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        progress: bool | str | None = None,
        hooks: Sequence[HookBase | Callable[[StepRecord], None]] = (),
    ) -> None:
        from workbench.evaluation.detection import check_metric

        self.run = RunDir(Path(run_dir))
        if resume:
            if not self.run.last_checkpoint.exists():
                raise WorkbenchError(f"{self.run.root}: nothing to resume (no checkpoints/last.pt)")
        elif self.run.last_checkpoint.exists():
            raise WorkbenchError(
                f"{self.run.root} already holds a trained run; pass --resume to continue it or choose another --out"
            )
        check_metric(cfg.metric)
        self.cfg = cfg
        self.resume = resume
        self.progress = progress_mode(progress)
        self.hooks = list(hooks)

    def build(self) -> SimpleTrainer:
        """Device, process group, seed, data, model, optimizer, loader and hooks; the run
        directory is created (or, resuming, the checkpoint loaded)."""
        from workbench.evaluation.detection import judged_key
        from workbench.methods import get_method

        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        distributed.init_from_environment(self.device)
        if self.device.type == "cuda" and distributed.is_distributed():
            self.device = torch.device("cuda", distributed.local_rank())
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.seed)

        self.train_set, self.val_set = _load_data(cfg)
        self.train_indices = _subset(len(self.train_set), cfg.data.max_train_images)
        self.val_indices = _subset(len(self.val_set), cfg.data.max_val_images)
        num_classes = len(self.train_set.categories)

        model = get_method(cfg.method).build_model(cfg.model, num_classes).to(self.device)
        self.model: nn.Module = model
        wrapped: nn.Module = model
        if distributed.is_distributed():
            wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        base_lr = cfg.effective_lr(distributed.world_size())
        optimizer = build_optimizer(model, cfg, base_lr)
        loader = TrainLoader(self.train_set, self.train_indices, cfg.batch_size, cfg.seed,
                             num_workers=cfg.data.num_workers, rank=distributed.rank(),
                             world_size=distributed.world_size())

        self.progress_hook = Progress(self.progress, every=cfg.log_every_steps)
        self.evaluation = Evaluation(self._evaluate, self.run, every=cfg.eval_every_epochs,
                                     key=judged_key(cfg.metric), note=self.progress_hook.note)
        user = [h if isinstance(h, HookBase) else StepCallback(h) for h in self.hooks]
        hooks = [
            LRSchedule(base_lr, lambda step, per_epoch: lr_factor(step, per_epoch, cfg.schedule)),
            *self._sampling_trace(),
            *user,
            MetricsWriter(self.run, cfg.log_every_steps, self.device),
            self.progress_hook,
            self.evaluation,
            Checkpointer(self._save, self.evaluation, note=self.progress_hook.note, where=str(self.run.last_checkpoint)),
            StopOnSignal(self.device),
        ]
        self.engine = SimpleTrainer(
            wrapped, loader, optimizer, epochs=cfg.schedule.epochs, device=self.device, hooks=hooks,
            amp=cfg.amp, grad_clip_norm=cfg.optimizer.grad_clip_norm,
        )

        if distributed.is_main_process():
            self.run.create()
            if not self.resume:
                self.run.write_config(cfg.to_dict())
        if self.resume:
            self.engine.load_state_dict(load_checkpoint(self.run.last_checkpoint, map_location=self.device))
            log.info("resumed from %s at epoch %d, step %d", self.run.last_checkpoint, self.engine.epoch,
                     self.engine.global_step)
            if distributed.is_main_process():
                self.run.truncate_metrics_after(self.engine.global_step)
        distributed.barrier()
        return self.engine

    def _sampling_trace(self) -> list[HookBase]:
        """The :class:`~workbench.engine.sampling_trace.SamplingTrace` hook the config asks for
        (``trace_sampling_every > 0``), else none."""
        cfg = self.cfg
        if not cfg.trace_sampling_every:
            return []
        from workbench.engine.sampling_trace import SamplingTrace, sampling_trace_dir

        return [SamplingTrace(sampling_trace_dir(self.run.root), every=cfg.trace_sampling_every,
                              images=cfg.trace_sampling_images, method=cfg.method, split=cfg.data.train_split,
                              seed=cfg.seed, meta={"data": cfg.data.spec})]

    def _save(self, which: str) -> None:
        if distributed.is_main_process():
            state = {
                **self.engine.state_dict(),
                "config": self.cfg.to_dict(),
                "label_to_category_id": dict(self.train_set.label_to_category_id),
                "categories": list(self.train_set.categories),
            }
            save_atomic(state, self.run.checkpoint(which))
        distributed.barrier()

    def _evaluate(self) -> dict[str, Any]:
        engine = self.engine
        self.progress_hook.note(f"epoch {engine.epoch}/{engine.epochs}: evaluating on {len(self.val_indices)} "
                                f"{self.cfg.data.val_split} images")
        timer = InferenceTimer(self.device, batch_size=self.cfg.batch_size)
        preds = predict_dataset(
            engine.model, self.val_set, self.device, batch_size=self.cfg.batch_size,
            indices=self.val_indices, progress=self.progress if self.progress != "off" else False, timer=timer,
        )
        metrics: dict[str, Any] = {}
        if distributed.is_main_process():
            metrics = evaluate_predictions(self.val_set, preds, indices=self.val_indices, metric=self.cfg.metric)
            metrics.update(timer.record())  # the speed per image beside the metrics (engine.timing)
        return distributed.broadcast_object(metrics)

    def fit(self) -> TrainResult:
        engine = self.build()
        try:
            engine.train()
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(
                f"{exc}, the last good checkpoint is kept in {self.run.root / 'checkpoints'}"
            ) from None
        distributed.barrier()
        return TrainResult(self.run.root, engine.epoch, engine.global_step, self.evaluation.best,
                           self.evaluation.last, engine.stop_requested, self.evaluation.key)


def train(cfg: TrainConfig, out_dir: Path | str, *, resume: bool = False, progress: bool | str | None = None,
          hooks: Sequence[HookBase | Callable[[StepRecord], None]] = ()) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (see :class:`Trainer`)."""
    return Trainer(cfg, Path(out_dir), resume=resume, progress=progress, hooks=hooks).fit()


__all__ = [
    "NonFiniteLossError", "SimpleTrainer", "StepRecord", "TrainResult", "Trainer", "autocast", "build_optimizer",
    "load_run_config", "load_trained_model", "peak_memory_mb", "resolve_device", "seed_everything", "train",
]
