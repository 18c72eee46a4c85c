"""Timing shared by the benchmark scripts: functions measured alternately, in one process, so
that their ratio is fair on a shared, noisy machine."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device | None = None) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call (CUDA work synchronised on ``device``)."""
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    *,
    warmup: int = 1,
    device: torch.device | None = None,
    rotate: bool = False,
) -> dict[str, list[tuple[float, float]]]:
    """``(wall, cpu)`` seconds per repeat of every function, after ``warmup`` calls of each.
    The order of the functions flips every repeat (``rotate``: it rotates by one, which spreads
    the positions evenly over three or more functions)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(repeats):
        if rotate:
            order = names[r % len(names):] + names[: r % len(names)]
        else:
            order = names if r % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(timed(fns[name], device))
    return times


def median_wall(times: list[tuple[float, float]]) -> float:
    return statistics.median(wall for wall, _ in times)


def median_cpu(times: list[tuple[float, float]]) -> float:
    return statistics.median(cpu for _, cpu in times)
