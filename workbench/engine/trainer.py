"""The training loop: one process or many (torchrun), CPU or CUDA.

A small loop: per step, the lr from a pure schedule, forward, a finiteness check of every loss
part, backward, optional clipping, an optimiser step, and a log record. Per epoch: evaluation on
the validation split, ``last`` and ``best`` checkpoints (atomic). SIGINT / SIGTERM save a
checkpoint at the current step and stop cleanly; ``resume=True`` continues from it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from workbench import distributed
from workbench.config import TrainConfig, train_config_from_dict
from workbench.engine.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from workbench.engine.inference import (
    evaluate_predictions,
    images_to_model_input,
    predict_dataset,
    targets_to_device,
    unwrap,
)
from workbench.engine.run_dir import RunDir
from workbench.engine.sampler import TrainSampler
from workbench.engine.schedule import lr_factor
from workbench.errors import ConfigError, WorkbenchError

log = logging.getLogger(__name__)


class NonFiniteLossError(WorkbenchError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


@dataclass
class StepRecord:
    """What hooks receive after every optimiser step."""

    epoch: int
    step: int  # global step, 1-based after the update
    lr: float
    losses: dict[str, float]


@dataclass
class TrainResult:
    run_dir: Path
    epochs_completed: int
    global_step: int
    best_ap: float | None
    last_eval: dict[str, float] | None
    interrupted: bool = False


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
    return device


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


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StopRequest:
    """SIGINT / SIGTERM set a flag the loop reads after each step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint after this step", self.signal_name)

    def __enter__(self) -> "StopRequest":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _autocast(device: torch.device, amp: str | None):
    if amp is None:
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ConfigError(f"--amp {amp} needs a CUDA device; this run is on {device}")
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _agree(flags: list[float], device: torch.device) -> list[float]:
    """Max over ranks, so every rank stops at the same step."""
    if not distributed.is_distributed():
        return flags
    t = torch.tensor(flags, dtype=torch.float32, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def _load_data(cfg: TrainConfig):
    from workbench.data.sources import open_dataset
    from workbench.data.transforms import train_transforms_rcnn

    train = open_dataset(cfg.data.spec, cfg.data.train_split, transforms=train_transforms_rcnn(cfg.data.hflip_prob))
    val = open_dataset(cfg.data.spec, cfg.data.val_split)
    return train, val


def _subset(n: int, limit: int | None) -> list[int]:
    return list(range(n if limit is None else min(n, limit)))


class Trainer:
    """Trains ``cfg`` into ``run_dir``. ``hooks`` are called with a ``StepRecord`` after each step."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        progress: bool | None = None,
        hooks: Sequence[Callable[[StepRecord], None]] = (),
    ) -> None:
        self.run = RunDir(Path(run_dir))
        if resume:
            if not self.run.last_checkpoint.exists():
                raise WorkbenchError(f"{self.run.root}: nothing to resume (no checkpoints/last.pt)")
        elif self.run.last_checkpoint.exists():
            raise WorkbenchError(
                f"{self.run.root} already holds a trained run; pass --resume to continue it or choose another --out"
            )
        self.cfg = cfg
        self.resume = resume
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.hooks = list(hooks)

    # -- set-up -----------------------------------------------------------------------------
    def _setup(self) -> None:
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

        method = get_method(cfg.method)
        model = method.build_model(cfg.model, num_classes).to(self.device)
        self.model: nn.Module = model
        if distributed.is_distributed():
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.base_lr = cfg.effective_lr(distributed.world_size())
        self.optimizer = build_optimizer(model, cfg, self.base_lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
        self.sampler = TrainSampler(
            len(self.train_indices), cfg.batch_size, cfg.seed, distributed.rank(), distributed.world_size()
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.best_ap: float | None = None
        self.last_eval: dict[str, float] | None = None

        if distributed.is_main_process():
            self.run.create()
            if not self.resume:
                self.run.config.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        if self.resume:
            self._load_state(load_checkpoint(self.run.last_checkpoint, map_location=self.device))
            if distributed.is_main_process():
                self.run.truncate_metrics_after(self.global_step)
        distributed.barrier()

    def _state(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "best_ap": self.best_ap,
            "last_eval": self.last_eval,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "label_to_category_id": dict(self.train_set.label_to_category_id),
            "categories": list(self.train_set.categories),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.global_step = state["global_step"]
        self.best_ap = state["best_ap"]
        self.last_eval = state["last_eval"]
        set_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d, step %d", self.run.last_checkpoint, self.epoch, self.global_step)

    def _save(self, which: str) -> None:
        if distributed.is_main_process():
            save_atomic(self._state(), self.run.checkpoint(which))
        distributed.barrier()

    # -- loop -------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> DataLoader:
        from workbench.data.collate import collate_samples

        self.sampler.set_epoch(epoch, self.batch_in_epoch)
        subset = torch.utils.data.Subset(self.train_set, self.train_indices)
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch * 104729 + distributed.rank())
        return DataLoader(
            subset,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=self.cfg.data.num_workers,
            collate_fn=collate_samples,
            generator=g,
            persistent_workers=False,
        )

    def _step(self, batch) -> dict[str, float] | None:
        """One optimiser step; the loss parts as floats, or None when a stop was requested."""
        lr = self.base_lr * lr_factor(self.global_step, self.steps_per_epoch, self.cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images_to_model_input(batch.images, self.device)
        targets = targets_to_device(batch.targets, self.device)
        with _autocast(self.device, self.cfg.amp):
            out = self.model(images, targets)
        losses = {k: v.float() for k, v in out.losses.items()}
        values = {k: float(v.detach()) for k, v in losses.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        (any_bad,) = _agree([float(bool(bad))], self.device)
        if any_bad:
            what = ", ".join(f"{k} = {values[k]}" for k in bad) or "on another rank"
            raise NonFiniteLossError(
                f"non-finite loss at step {self.global_step + 1} (epoch {self.epoch + 1}): {what}; "
                f"training stopped, the last good checkpoint is kept in {self.run.root / 'checkpoints'}"
            )
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.optimizer.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(unwrap(self.model).parameters(), self.cfg.optimizer.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values["loss"] = float(total.detach())
        values["lr"] = lr
        return values

    def _evaluate(self) -> dict[str, float]:
        preds = predict_dataset(
            self.model, self.val_set, self.device, batch_size=self.cfg.batch_size,
            indices=self.val_indices, progress=self.progress,
        )
        metrics = {}
        if distributed.is_main_process():
            metrics = evaluate_predictions(self.val_set, preds, indices=self.val_indices)
        return distributed.broadcast_object(metrics)

    def fit(self) -> TrainResult:
        self._setup()
        cfg = self.cfg
        main = distributed.is_main_process()
        interrupted = False
        with StopRequest() as stop:
            while self.epoch < cfg.schedule.epochs:
                loader = self._loader(self.epoch)
                bar = tqdm(
                    total=self.steps_per_epoch, initial=self.batch_in_epoch, unit="step",
                    desc=f"epoch {self.epoch + 1}/{cfg.schedule.epochs}",
                    disable=not (self.progress and main), dynamic_ncols=True,
                )
                window: dict[str, list[float]] = {}
                t_data = time.perf_counter()
                for batch in loader:
                    data_time = time.perf_counter() - t_data
                    t0 = time.perf_counter()
                    values = self._step(batch)
                    self.global_step += 1
                    self.batch_in_epoch += 1
                    step_time = time.perf_counter() - t0
                    for k, v in values.items():
                        window.setdefault(k, []).append(v)
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.2e}")
                    record = StepRecord(self.epoch, self.global_step, values["lr"], values)
                    for hook in self.hooks:
                        hook(record)
                    if self.global_step % cfg.log_every_steps == 0 or self.batch_in_epoch == self.steps_per_epoch:
                        self._log_train(window, step_time, data_time)
                        window = {}
                    (stop_now,) = _agree([float(stop.signal_name is not None)], self.device)
                    if stop_now:
                        interrupted = True
                        break
                    t_data = time.perf_counter()
                bar.close()
                if interrupted:
                    self._save("last")
                    if main:
                        log.warning("stopped at epoch %d, step %d; checkpoint saved to %s (resume with --resume)",
                                    self.epoch + 1, self.global_step, self.run.last_checkpoint)
                    break
                self.epoch += 1
                self.batch_in_epoch = 0
                self._end_of_epoch()
        distributed.barrier()
        return TrainResult(self.run.root, self.epoch, self.global_step, self.best_ap, self.last_eval, interrupted)

    def _log_train(self, window: dict[str, list[float]], step_time: float, data_time: float) -> None:
        means = {k: sum(v) / len(v) for k, v in window.items()}
        means = distributed.all_reduce_mean(means, self.device)
        if not distributed.is_main_process():
            return
        record = {"kind": "train", "epoch": self.epoch + 1, "step": self.global_step,
                  "step_time": step_time, "data_time": data_time,
                  "peak_memory_mb": peak_memory_mb(self.device), **means}
        self.run.append_metrics(record)
        if not self.progress:
            parts = " ".join(f"{k}={v:.4f}" for k, v in sorted(means.items()) if k.startswith("loss"))
            log.info("epoch %d step %d/%d lr=%.2e %s (%.2fs/step)", self.epoch + 1, self.batch_in_epoch,
                     self.steps_per_epoch, means["lr"], parts, step_time)

    def _end_of_epoch(self) -> None:
        cfg = self.cfg
        due = self.epoch % cfg.eval_every_epochs == 0 or self.epoch == cfg.schedule.epochs
        if due:
            metrics = self._evaluate()
            self.last_eval = metrics
            improved = self.best_ap is None or metrics["AP"] > self.best_ap
            if improved:
                self.best_ap = metrics["AP"]
            if distributed.is_main_process():
                self.run.eval_file(self.epoch).write_text(json.dumps(metrics, indent=2) + "\n")
                self.run.append_metrics({"kind": "eval", "epoch": self.epoch, "step": self.global_step, **metrics})
                log.info("epoch %d: AP %.4f AP50 %.4f AP75 %.4f", self.epoch, metrics["AP"], metrics["AP50"], metrics["AP75"])
            if improved:
                self._save("best")
        self._save("last")


def train(cfg: TrainConfig, out_dir: Path | str, *, resume: bool = False, progress: bool | None = None,
          hooks: Sequence[Callable[[StepRecord], None]] = ()) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (see ``Trainer``)."""
    return Trainer(cfg, Path(out_dir), resume=resume, progress=progress, hooks=hooks).fit()


def load_run_config(run_dir: Path | str) -> TrainConfig:
    return train_config_from_dict(RunDir(Path(run_dir)).read_config())


def load_trained_model(run_dir: Path | str, which: str = "best", device: str | torch.device = "cpu"):
    """(model in eval mode, config, checkpoint) of a finished or interrupted run."""
    from workbench.methods import get_method

    run = RunDir(Path(run_dir))
    cfg = train_config_from_dict(run.read_config())
    path = run.checkpoint(which)
    if which == "best" and not path.exists():
        path = run.last_checkpoint
    state = load_checkpoint(path, map_location=device)
    model = get_method(cfg.method).build_model(cfg.model, len(state["categories"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, state


__all__ = [
    "NonFiniteLossError", "StepRecord", "TrainResult", "Trainer", "train", "load_run_config",
    "load_trained_model", "resolve_device"
]
