"""Inference speed per image, measured by the prediction loop and kept with the metrics.

:class:`InferenceTimer` times the detector's forward pass of each batch in
:func:`workbench.engine.inference.iter_model_outputs` (pre-processing inside the model,
post-processing and NMS included; reading and decoding the images, the COCO evaluation and the
copy of the detections to the CPU left out). On CUDA the device is synchronised before each
reading, so that the time is that of the kernels, not of their launch.

Decisions:

- the first batch is a warm-up (CUDA context and cuDNN autotuning, the allocator, lazy
  initialisation) and is left out when other batches follow, as detectron2's
  ``inference_on_dataset`` leaves out its first iterations; with a single batch it is all
  there is and counts;
- the number is seconds per image at the pass's batch size, with the device and the number of
  CPU threads torch used: speeds are comparable only between passes on the same device and
  thread count, so the report shows them beside the number;
- untraced passes only: recording a trace copies intermediate tensors, which is not the
  detector's speed, so a traced pass records none.

The record is a flat dict (:data:`TIMING_KEYS`) merged into the metrics that the evaluation
writes (``eval/<which>_<split>.json`` and the ``kind: eval`` lines of ``metrics.jsonl``); runs
written before it have none, and :func:`run_speed` gives ``None`` for them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

SECONDS_PER_IMAGE = "inference_s_per_image"
DEVICE = "inference_device"
THREADS = "inference_threads"
BATCH_SIZE = "inference_batch_size"
IMAGES = "inference_images"
#: The keys of a timing record, in order.
TIMING_KEYS = (SECONDS_PER_IMAGE, DEVICE, THREADS, BATCH_SIZE, IMAGES)


def device_label(device: torch.device | str) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``: the device with its model name on CUDA."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


class InferenceTimer:
    """Accumulates the forward time of the batches of one prediction pass.

    ```python
    timer = InferenceTimer("cpu", batch_size=2)
    with timer.batch(len(images)):
        output = model(images)
    timer.record()  # {"inference_s_per_image": ..., "inference_device": "cpu", ...}
    ```
    """

    def __init__(self, device: torch.device | str, *, batch_size: int) -> None:
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.batches: list[tuple[int, float]] = []  # (images, seconds) of each batch, in order

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def batch(self, images: int) -> "_BatchClock":
        """A context that times one batch of ``images`` images."""
        return _BatchClock(self, images)

    def add(self, images: int, seconds: float) -> None:
        self.batches.append((int(images), float(seconds)))

    def timed_batches(self) -> list[tuple[int, float]]:
        """The batches that count: all but the first when there are several (the warm-up)."""
        return self.batches[1:] if len(self.batches) > 1 else list(self.batches)

    def seconds_per_image(self) -> float | None:
        """Total forward seconds over the images of :meth:`timed_batches` (``None``: none timed)."""
        counted = self.timed_batches()
        images = sum(n for n, _ in counted)
        return sum(s for _, s in counted) / images if images else None

    def record(self) -> dict[str, Any]:
        """The timing record (:data:`TIMING_KEYS`); empty when no batch was timed."""
        seconds = self.seconds_per_image()
        if seconds is None:
            return {}
        return {SECONDS_PER_IMAGE: seconds, DEVICE: device_label(self.device), THREADS: torch.get_num_threads(),
                BATCH_SIZE: self.batch_size, IMAGES: sum(n for n, _ in self.timed_batches())}


class _BatchClock:
    def __init__(self, timer: InferenceTimer, images: int) -> None:
        self.timer, self.images = timer, images

    def __enter__(self) -> None:
        self.timer._sync()
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.timer._sync()
            self.timer.add(self.images, time.perf_counter() - self.start)


@dataclass(frozen=True)
class InferenceSpeed:
    """One pass's timing: seconds per image and where it was measured."""

    seconds_per_image: float
    device: str
    threads: int | None = None
    batch_size: int | None = None
    images: int | None = None

    @property
    def setting(self) -> str:
        """``cpu, 1 thread, batch 2``: what the number is comparable under."""
        parts = [self.device]
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        if self.batch_size is not None:
            parts.append(f"batch {self.batch_size}")
        return ", ".join(parts)


def speed_of(metrics: Mapping[str, Any] | None) -> InferenceSpeed | None:
    """The :class:`InferenceSpeed` of a metrics dict, ``None`` when it holds no timing."""
    if not metrics or metrics.get(SECONDS_PER_IMAGE) is None:
        return None
    return InferenceSpeed(float(metrics[SECONDS_PER_IMAGE]), str(metrics.get(DEVICE, "?")), metrics.get(THREADS),
                          metrics.get(BATCH_SIZE), metrics.get(IMAGES))


def run_speed(final: Mapping[str, Any] | None, records: Iterable[Mapping[str, Any]] = ()) -> InferenceSpeed | None:
    """A run's speed: that of its final metrics (``eval/best_<split>.json``) when they hold one,
    else that of its last ``kind: eval`` record that does (a final evaluation from a traced
    pass has none); ``None`` for runs written before timing was recorded."""
    speed = speed_of(final)
    if speed is not None:
        return speed
    evals = [r for r in records if r.get("kind") == "eval" and r.get(SECONDS_PER_IMAGE) is not None]
    return speed_of(evals[-1]) if evals else None


def without_timing(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` less the timing keys (for tables of accuracy metrics)."""
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


__all__ = [
    "BATCH_SIZE", "DEVICE", "IMAGES", "InferenceSpeed", "InferenceTimer", "SECONDS_PER_IMAGE", "THREADS",
    "TIMING_KEYS", "device_label", "run_speed", "speed_of", "without_timing",
]
