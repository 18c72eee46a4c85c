"""The box-stage sampling records a run wrote while training, read back for figures.

A run trained with ``trace_sampling_every > 0`` holds ``RUN/train_sampling/``: one
:data:`workbench.records.BOX_SAMPLING` record per recorded image and step (written by
:mod:`workbench.engine.sampling_trace`; the format of :mod:`workbench.inspection.traces`). Its
manifest's ``meta`` names the recorded stage (``stage``), its sampler (``sampler``, the repr)
and the random sampler of the comparison (``random``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from workbench import records as R
from workbench.engine.sampling_trace import sampling_trace_dir
from workbench.inspection.traces import MANIFEST, TraceSet, load_traces

#: Keys of :func:`sampled_negative_ious`.
ALL_NEGATIVES, STAGE_SAMPLER, RANDOM_SAMPLER = "all", "sampled", "random"


def load_sampling_traces(run_dir: Path | str) -> TraceSet | None:
    """The sampling records of a run (``None`` when it recorded none)."""
    path = sampling_trace_dir(run_dir)
    return load_traces(path) if (path / MANIFEST).is_file() else None


def sampled_negative_ious(traces: Iterable[Any], *, min_step: int = 0) -> dict[str, np.ndarray]:
    """The best IoU with the GT of the negatives (label 0) of every recorded image from step
    ``min_step`` on: ``{ALL_NEGATIVES: all of them, STAGE_SAMPLER: those the stage's sampler
    picked, RANDOM_SAMPLER: those the random sampler of the comparison picked}`` (the last is
    empty when the records have no random comparison)."""
    parts: dict[str, list[np.ndarray]] = {ALL_NEGATIVES: [], STAGE_SAMPLER: [], RANDOM_SAMPLER: []}
    for trace in traces:
        record = trace[R.BOX_SAMPLING]
        if int(record[R.STEP]) < min_step:
            continue
        iou = record[R.MAX_IOU].numpy()
        negative = record[R.LABELS].numpy() == 0
        parts[ALL_NEGATIVES].append(iou[negative])
        parts[STAGE_SAMPLER].append(iou[negative & record[R.SAMPLED].numpy()])
        if R.RANDOM_SAMPLED in record:
            parts[RANDOM_SAMPLER].append(iou[negative & record[R.RANDOM_SAMPLED].numpy()])
    return {name: np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.float32)
            for name, arrays in parts.items()}


def recorded_steps(traces: Iterable[Any]) -> list[int]:
    """The distinct steps the records were taken at, in increasing order."""
    return sorted({int(trace[R.BOX_SAMPLING][R.STEP]) for trace in traces})


__all__ = [
    "ALL_NEGATIVES",
    "RANDOM_SAMPLER",
    "STAGE_SAMPLER",
    "load_sampling_traces",
    "recorded_steps",
    "sampled_negative_ious",
]
