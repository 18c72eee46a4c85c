"""Training hooks: everything the loop does besides the optimiser step.

A hook overrides any of the six methods of :class:`HookBase`; :class:`~workbench.engine.trainer.
SimpleTrainer` calls them in the order the hooks were registered::

    before_train
    for each epoch:
        before_epoch
        for each batch:  before_step, the step, after_step
        after_epoch          (``trainer.epoch`` already counts the finished epoch)
    after_train              (also after an exception: ``trainer.failed`` is then True)

Hooks read the trainer's state (``model``, ``optimizer``, ``epoch``, ``epochs``,
``batch_in_epoch``, ``steps_per_epoch``, ``global_step``, ``step_values``: the loss parts, the
total ``loss`` and the ``lr`` of the last step; ``step_time``, ``data_time``) and may ask it to
stop (``trainer.request_stop()``). A hook with state that a resumed run needs implements
``state_dict`` / ``load_state_dict``; its entries go into the checkpoint beside the trainer's.

The hooks here: :class:`LRSchedule` (the lr of every step from a pure schedule),
:class:`StepCallback` (a function of a :class:`StepRecord` after every step),
:class:`MetricsWriter` (``train`` records in ``metrics.jsonl``), :class:`Progress` (a tqdm bar on
a terminal, plain progress lines with an ETA elsewhere), :class:`Evaluation` (per-epoch
evaluation, ``eval/epoch_<E>.json``, the best score), :class:`Checkpointer` (``last`` / ``best``,
atomic) and :class:`StopOnSignal` (SIGINT / SIGTERM stop cleanly after the current step).
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from workbench import distributed
from workbench.engine.progress import format_duration

if TYPE_CHECKING:  # pragma: no cover
    from workbench.engine.run_dir import RunDir
    from workbench.engine.trainer import SimpleTrainer

log = logging.getLogger(__name__)


class HookBase:
    """A training hook; ``self.trainer`` is set when the trainer registers it."""

    trainer: "SimpleTrainer"

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class StepRecord:
    """What a :class:`StepCallback` receives after every optimiser step."""

    epoch: int  # 0-based epoch the step belongs to
    step: int  # global step, 1-based after the update
    lr: float
    losses: dict[str, float]


class LRSchedule(HookBase):
    """Sets the lr of every parameter group before each step: ``base_lr * factor(global_step,
    steps_per_epoch)``. A pure function of the step, so a resumed run needs no state."""

    def __init__(self, base_lr: float, factor: Callable[[int, int], float]) -> None:
        self.base_lr = base_lr
        self.factor = factor

    def before_step(self) -> None:
        t = self.trainer
        lr = self.base_lr * self.factor(t.global_step, t.steps_per_epoch)
        for group in t.optimizer.param_groups:
            group["lr"] = lr


class StepCallback(HookBase):
    """Calls ``fn(StepRecord)`` after every step."""

    def __init__(self, fn: Callable[[StepRecord], None]) -> None:
        self.fn = fn

    def after_step(self) -> None:
        t = self.trainer
        self.fn(StepRecord(t.epoch, t.global_step, t.step_values["lr"], dict(t.step_values)))


def peak_memory_mb(device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, the resident set size on the CPU."""
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


class MetricsWriter(HookBase):
    """Appends a ``train`` record to the run's ``metrics.jsonl`` every ``every`` steps and at
    each epoch's last step: the mean of every loss part and the lr over the steps since the
    last record (averaged over ranks), ``step_time``, ``data_time`` and ``peak_memory_mb``."""

    def __init__(self, run: "RunDir", every: int, device) -> None:
        self.run = run
        self.every = max(1, int(every))
        self.device = device
        self.window: dict[str, list[float]] = {}

    def before_epoch(self) -> None:
        self.window = {}

    def after_step(self) -> None:
        t = self.trainer
        for k, v in t.step_values.items():
            self.window.setdefault(k, []).append(v)
        if t.global_step % self.every and t.batch_in_epoch != t.steps_per_epoch:
            return
        means = {k: sum(v) / len(v) for k, v in self.window.items()}
        self.window = {}
        means = distributed.all_reduce_mean(means, self.device)
        if distributed.is_main_process():
            self.run.append_metrics({
                "kind": "train", "epoch": t.epoch + 1, "step": t.global_step, "step_time": t.step_time,
                "data_time": t.data_time, "peak_memory_mb": peak_memory_mb(self.device), **means,
            })


class Progress(HookBase):
    """What a person watching the run sees (main process only).

    ``mode="bar"`` (a terminal): one tqdm bar per epoch with the loss, the lr and the ETA of the
    whole run. ``mode="lines"`` (papermill, pipelines, CI logs: not a terminal): one plain line
    every ``every`` steps and at each epoch's end, written to ``stream`` (default: the current
    ``sys.stderr``)::

        epoch 1/2 step 20/250 loss 1.2345 lr 2.00e-02 0.72 s/step ETA 5m31s

    ``loss`` is the mean total loss since the previous line. ``s/step`` is the mean wall time of
    a step in this process so far (data loading and hooks included); the ETA is the remaining
    steps at that pace, plus the remaining epoch ends (evaluation and checkpoints) at the pace
    of those already timed. ``mode="off"`` shows nothing. :meth:`note` writes a line the same
    way (the evaluation reports through it).
    """

    def __init__(self, mode: str = "lines", every: int = 20, stream: IO[str] | None = None) -> None:
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"unknown progress mode {mode!r}: use bar, lines or off")
        self.mode = mode
        self.every = max(1, int(every))
        self._stream = stream
        self._bar = None
        self._step_seconds = 0.0
        self._steps_timed = 0
        self._epoch_end_seconds: list[float] = []  # evaluation and checkpoints of each epoch end
        self._last: float | None = None
        self._epoch_end_started: float | None = None
        self._window: list[float] = []

    @property
    def active(self) -> bool:
        return self.mode != "off" and distributed.is_main_process()

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    def note(self, text: str) -> None:
        """One line for the person watching (a log record when progress is off; nothing on the
        other ranks)."""
        if not distributed.is_main_process():
            return
        if self.mode == "off":
            log.info("%s", text)
        elif self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    # -- timing -----------------------------------------------------------------------------
    def seconds_per_step(self) -> float:
        return self._step_seconds / self._steps_timed if self._steps_timed else float("nan")

    def eta_seconds(self) -> float:
        t = self.trainer
        remaining_steps = t.epochs * t.steps_per_epoch - (t.epoch * t.steps_per_epoch + t.batch_in_epoch)
        eta = max(0, remaining_steps) * self.seconds_per_step()
        if self._epoch_end_seconds:
            # during an epoch its end is still to come; at its end (epoch already counted) too
            remaining_ends = t.epochs - t.epoch + (1 if self._epoch_end_started is not None else 0)
            eta += remaining_ends * sum(self._epoch_end_seconds) / len(self._epoch_end_seconds)
        return eta

    # -- hooks ------------------------------------------------------------------------------
    def before_epoch(self) -> None:
        now = time.perf_counter()
        if self._epoch_end_started is not None:
            self._epoch_end_seconds.append(now - self._epoch_end_started)
            self._epoch_end_started = None
        self._last = now
        self._window = []
        if self.active and self.mode == "bar":
            from tqdm.auto import tqdm

            t = self.trainer
            self._bar = tqdm(total=t.steps_per_epoch, initial=t.batch_in_epoch, unit="step", file=self.stream,
                             desc=f"epoch {t.epoch + 1}/{t.epochs}", dynamic_ncols=True)

    def after_step(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self._step_seconds += now - self._last
            self._steps_timed += 1
        self._last = now
        t = self.trainer
        loss = t.step_values.get("loss", float("nan"))
        self._window.append(loss)
        if not self.active:
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.3f}", lr=f"{t.step_values.get('lr', float('nan')):.2e}",
                                  eta=format_duration(self.eta_seconds()), refresh=False)
        elif self.mode == "lines" and (t.global_step % self.every == 0 or t.batch_in_epoch == t.steps_per_epoch):
            self.note(self._line())
            self._window = []

    def _line(self) -> str:
        t = self.trainer
        mean_loss = sum(self._window) / len(self._window) if self._window else float("nan")
        return (f"epoch {t.epoch + 1}/{t.epochs} step {t.batch_in_epoch}/{t.steps_per_epoch} "
                f"loss {mean_loss:.4f} lr {t.step_values.get('lr', float('nan')):.2e} "
                f"{self.seconds_per_step():.2f} s/step ETA {format_duration(self.eta_seconds())}")

    def after_epoch(self) -> None:
        self._epoch_end_started = time.perf_counter()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.active:
            t = self.trainer
            self.note(f"epoch {t.epoch}/{t.epochs} done: step {t.global_step}/{t.epochs * t.steps_per_epoch}, "
                      f"{self.seconds_per_step():.2f} s/step, ETA {format_duration(self.eta_seconds())}")

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Evaluation(HookBase):
    """Evaluates after every ``every`` epochs and after the last one: ``evaluate()`` returns the
    metrics dict (the same on every rank); they go to ``eval/epoch_<E>.json`` and a record of
    ``kind: eval`` in ``metrics.jsonl``. ``key`` names the number that judges the run (``AP``,
    ``voc07_mAP``); :attr:`improved` says whether the last evaluation was the best so far."""

    def __init__(self, evaluate: Callable[[], dict[str, Any]], run: "RunDir", *, every: int, key: str,
                 note: Callable[[str], None] = log.info) -> None:
        self.evaluate = evaluate
        self.run = run
        self.every = max(1, int(every))
        self.key = key
        self.note = note
        self.best: float | None = None
        self.last: dict[str, Any] | None = None
        self.improved = False

    def after_epoch(self) -> None:
        t = self.trainer
        self.improved = False
        if t.epoch % self.every and t.epoch != t.epochs:
            return
        start = time.perf_counter()
        metrics = self.evaluate()
        self.last = metrics
        score = metrics.get(self.key)
        score = float("-inf") if score is None or not math.isfinite(score) else float(score)
        if self.best is None or score > self.best:
            self.best, self.improved = score, True
        if distributed.is_main_process():
            self.run.write_eval(t.epoch, metrics)
            self.run.append_metrics({"kind": "eval", "epoch": t.epoch, "step": t.global_step, **metrics})
            shown = [k for k in dict.fromkeys([self.key, "AP", "AP50", "AP75"]) if k in metrics]
            values = " ".join(f"{k} {_fmt(metrics[k])}" for k in shown)
            self.note(f"epoch {t.epoch}/{t.epochs} evaluation: {values} ({time.perf_counter() - start:.1f} s)")

    def state_dict(self) -> dict[str, Any]:
        # ``best_ap`` keeps its name from earlier checkpoints; it holds the best value of ``key``.
        return {"best_ap": self.best, "best_metric": self.key, "last_eval": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best_ap")
        self.last = state.get("last_eval")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


class Checkpointer(HookBase):
    """Saves ``last`` at every epoch end and on a requested stop, and ``best`` when
    ``evaluation`` (if given) just improved. ``save(which)`` writes the checkpoint (atomically)."""

    def __init__(self, save: Callable[[str], None], evaluation: Evaluation | None = None,
                 note: Callable[[str], None] = log.warning, where: str = "") -> None:
        self.save = save
        self.evaluation = evaluation
        self.note = note
        self.where = where

    def after_epoch(self) -> None:
        if self.evaluation is not None and self.evaluation.improved:
            self.save("best")
        self.save("last")

    def after_train(self) -> None:
        t = self.trainer
        if t.stop_requested and not t.failed:
            self.save("last")
            if distributed.is_main_process():
                self.note(f"stopped at epoch {t.epoch + 1}, step {t.global_step}; checkpoint saved"
                          f"{' to ' + self.where if self.where else ''} (resume with --resume)")


class StopOnSignal(HookBase):
    """SIGINT / SIGTERM ask the trainer to stop after the current step (all ranks agree on the
    step); a second SIGINT raises ``KeyboardInterrupt``. Handlers are installed only in the main
    thread, and the previous ones are restored after training. Register it last, so that every
    other hook has seen the step it stops at."""

    def __init__(self, device) -> None:
        self.device = device
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint after this step", self.signal_name)

    def before_train(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def after_step(self) -> None:
        (stop,) = agree_max([float(self.signal_name is not None)], self.device)
        if stop:
            self.trainer.request_stop()

    def after_train(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def agree_max(flags: list[float], device) -> list[float]:
    """The maximum of each flag over ranks, so that every rank takes the same decision."""
    if not distributed.is_distributed():
        return flags
    import torch

    t = torch.tensor(flags, dtype=torch.float32, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


__all__ = [
    "Checkpointer", "Evaluation", "HookBase", "LRSchedule", "MetricsWriter", "Progress", "StepCallback",
    "StepRecord", "StopOnSignal", "agree_max", "format_duration", "peak_memory_mb",
]
