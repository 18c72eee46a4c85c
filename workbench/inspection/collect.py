"""Prediction with a trace: the detections of every image plus what the detector recorded.

The detector runs with a :class:`workbench.modeling.TraceRecorder`, which changes no output
(every NMS runs through the ledger whose keep set is ``batched_nms``'s), so the detections are
those of plain prediction. Each image's records are completed with what a method returns
outside the recorder: per-box ``Detections.extras`` become fields of the ``detections`` record.
Everything else (proposals, maps, NMS ledgers) a method records itself. Per-level map records
are wrapped as the trace reader wraps them (:func:`workbench.inspection.maps.as_map_record`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from workbench import distributed
from workbench.engine.inference import ImagePrediction, iter_model_outputs
from workbench.errors import WorkbenchError
from workbench.inspection.maps import as_map_record
from workbench.inspection.traces import DEFAULT_SHARD_SIZE, ImageTrace, TraceWriter
from workbench.modeling.trace import TraceRecorder
from workbench.structures import Detections


def complete_records(records: Mapping[str, Mapping[str, Tensor]], detections: Detections) -> dict[str, dict[str, Tensor]]:
    """One image's recorded fields on the CPU, plus the detection extras the model returned but
    did not record."""
    out = {name: as_map_record({f: t.detach().cpu() for f, t in fields.items()}) for name, fields in records.items()}
    det = out.setdefault(
        "detections", {"boxes": detections.boxes.cpu(), "scores": detections.scores.cpu(), "labels": detections.labels.cpu()}
    )
    for name, value in detections.extras.items():
        det.setdefault(name, value.detach().cpu())
    return out


def iter_traced_predictions(
    model: nn.Module,
    dataset,
    device: torch.device | str,
    *,
    batch_size: int = 2,
    indices: Sequence[int] | None = None,
    progress: bool | str = False,
) -> Iterator[tuple[ImagePrediction, ImageTrace]]:
    """``(prediction, trace)`` of each image of ``dataset`` (or of ``indices``), in dataset
    order; detections in original-image coordinates on the CPU, as ``predict_dataset`` gives.
    The model runs in the engine's prediction loop (``device`` a device or its name, as there)
    with a fresh ``TraceRecorder`` per batch."""
    if distributed.is_distributed():
        raise WorkbenchError("tracing runs in one process; run `workbench predict --trace` without torchrun")
    for item in iter_model_outputs(model, dataset, device, indices=indices, batch_size=batch_size,
                                   progress=progress, desc="predict+trace", recorder_factory=TraceRecorder):
        batch, result = item.batch, item.output
        for i, det in enumerate(result.detections):
            records = complete_records(item.recorder.images[i], det)
            trace = ImageTrace(int(batch.image_ids[i]), batch.file_names[i], tuple(batch.orig_sizes[i]), records)
            yield ImagePrediction(int(batch.image_ids[i]), det.to("cpu")), trace


def dataset_meta(dataset, data_spec: str | None, checkpoint: str | None) -> dict[str, Any]:
    """What the trace manifest keeps about the data: the spec to reopen it, the image folder and
    the categories (label ``k`` is ``categories[k - 1]``)."""
    image_dir = getattr(dataset, "image_dir", None)
    return {
        "data": data_spec,
        "checkpoint": checkpoint,
        "image_dir": None if image_dir is None else str(Path(image_dir).resolve()),
        "categories": [dict(c) for c in getattr(dataset, "categories", [])],
    }


def predict_with_traces(
    model: nn.Module,
    dataset,
    device: torch.device | str,
    out_dir: Path,
    *,
    method: str,
    split: str,
    meta: Mapping[str, Any] | None = None,
    batch_size: int = 2,
    progress: bool | str = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> list[ImagePrediction]:
    """Predict every image of ``dataset``, write the traces to ``out_dir`` (replacing it) and
    return the predictions sorted by image id."""
    predictions = []
    with TraceWriter(out_dir, method=method, split=split, meta=meta, shard_size=shard_size) as writer:
        for prediction, trace in iter_traced_predictions(model, dataset, device, batch_size=batch_size,
                                                         progress=progress):
            predictions.append(prediction)
            writer.add(trace)
    return sorted(predictions, key=lambda p: p.image_id)


__all__ = ["complete_records", "dataset_meta", "iter_traced_predictions", "predict_with_traces"]
