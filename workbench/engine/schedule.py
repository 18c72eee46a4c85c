"""Learning-rate schedules as pure functions of the global step (resume needs no state)."""

from __future__ import annotations

import bisect
import math

from workbench.config import ScheduleConfig


def lr_factor(step: int, steps_per_epoch: int, sched: ScheduleConfig) -> float:
    """Multiplier of the base lr at global ``step`` (0-based): warm-up times decay."""
    warmup = 1.0
    if step < sched.warmup_iters:
        alpha = step / max(1, sched.warmup_iters)
        warmup = sched.warmup_factor * (1 - alpha) + alpha
    epoch_float = step / max(1, steps_per_epoch)
    if sched.decay == "step":
        decay = sched.gamma ** bisect.bisect_right(sorted(sched.milestones), int(epoch_float))
    elif sched.decay == "cosine":
        progress = min(1.0, epoch_float / max(1, sched.epochs))
        decay = sched.min_lr_factor + (1 - sched.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    elif sched.decay == "constant":
        decay = 1.0
    else:
        raise ValueError(f"unknown lr decay {sched.decay!r}")
    return warmup * decay
