"""A run's traces as a persistent FiftyOne dataset, for browsing errors in the FiftyOne App.

One sample per traced image (``RUN/traces/<split>``, see :mod:`workbench.inspection.traces`),
with image ``metadata`` and these fields:

- ``ground_truth`` (``Detections``): the dataset's boxes; crowd / ignore boxes (COCO
  ``iscrowd``, VOC ``difficult``) carry ``iscrowd=True`` and the evaluation ignores them;
- ``predictions`` (``Detections``): the run's detections (``confidence`` = score), plus every
  per-box method extra of the ``detections`` record as an attribute (e.g. ``sigma``);
- ``proposals`` (``Detections``, label ``"proposal"``): the first ``max_proposals`` RPN
  proposals after NMS (highest scores first), ``confidence`` = proposal score, plus per-box
  extras (KL-RPN ``sigma``);
- ``suppressed`` (``Detections``): boxes removed by the final per-class NMS (``rcnn_nms``),
  with ``confidence`` (their score), ``suppressed_by`` (the FiftyOne id of the kept box in
  ``predictions`` of the same sample that suppressed it) and ``suppressor_iou``. A kept box
  beyond the detector's top-k cut is not in ``predictions``; the boxes it suppressed are left
  out, so every ``suppressed_by`` names an exported prediction;
- one ``Heatmap`` per map record of the trace (a record named ``<field>_map``, e.g. KL-RPN's
  ``uncertainty_map`` -> ``uncertainty``), see :func:`heatmap_values`; written as 8-bit PNGs
  under ``RUN/fiftyone/<dataset name>/<field>/`` on one value range for the whole split
  (the heatmap's ``value_range`` attribute gives it);
- the evaluation ``eval`` (``evaluate_detections``, COCO style, ``compute_mAP=True``):
  ``eval_tp`` / ``eval_fp`` / ``eval_fn`` per sample and ``eval`` (``"tp"``, ``"fp"``,
  ``"fn"``), ``eval_id``, ``eval_iou`` per box.

Per-box extras: a ``(N,)`` tensor becomes a number per box, a ``(N, K)`` tensor a list of ``K``
numbers plus ``<name>_mean`` (their mean, a number the App can filter on).

Boxes cross here, and only here, from absolute ``xyxy`` pixels to FiftyOne's relative
``[x, y, w, h]`` (:func:`relative_xywh`). Samples are added by file path first, then each field
is written for a chunk of samples with ``set_values`` (raw label documents, schema declared up
front), which keeps 2,000 samples with hundreds of boxes each within seconds.
"""

from __future__ import annotations

import logging
import math
import mimetypes
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench.atomic import atomic_output
from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

DEFAULT_MAX_PROPOSALS = 100
EVAL_KEY = "eval"
CHUNK_SIZE = 500
PROPOSAL_LABEL = "proposal"
#: Fields drawn in the App's grid when it opens (heatmaps too); the others are a click away.
SHOWN_FIELDS = ("ground_truth", "predictions")
#: Fields of a box record that are not per-box extras.
BOX_FIELDS = ("boxes", "scores", "labels")
#: Map-record fields used as the heatmap value, in order of preference, with how each is turned
#: into a value that grows with uncertainty. KL-RPN's ``log_objectness`` is
#: ``-log(sigma_x sigma_y sigma_w sigma_h)``, so its negation is the log of the sigma product.
HEATMAP_VALUE_FIELDS: tuple[tuple[str, float, str], ...] = (
    ("uncertainty", 1.0, "uncertainty"),
    ("log_objectness", -1.0, "log(sigma_x sigma_y sigma_w sigma_h)"),
)


def default_dataset_name(run_dir: Path | str, split: str) -> str:
    """``workbench-<run directory name>-<split>``."""
    return f"workbench-{Path(run_dir).resolve().name}-{split}"


# --------------------------------------------------------------------------------------------
# boxes and attributes (pure: no FiftyOne needed)


def relative_xywh(boxes: Tensor | np.ndarray, orig_size: Sequence[int]) -> np.ndarray:
    """Absolute ``xyxy`` boxes (N, 4) in an image of ``(height, width)`` -> FiftyOne's relative
    ``[x, y, w, h]`` (N, 4) float64."""
    b = np.asarray(boxes.cpu() if isinstance(boxes, Tensor) else boxes, dtype=np.float64).reshape(-1, 4)
    height, width = float(orig_size[0]), float(orig_size[1])
    scale = np.array([width, height, width, height])
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1) / scale


def _python_values(tensor: Tensor) -> list[Any]:
    """A 1-D or 2-D tensor as nested Python numbers (bool / int / float)."""
    if tensor.dtype == torch.bool:
        return tensor.tolist()
    if tensor.is_floating_point():
        return tensor.double().tolist()
    return tensor.long().tolist()


def per_box_attributes(fields: Mapping[str, Tensor], num_boxes: int, exclude: Iterable[str] = BOX_FIELDS) -> dict[str, list]:
    """Per-box extras of a record: name -> one value per box (see the module docstring)."""
    skip = set(exclude)
    out: dict[str, list] = {}
    for name, value in fields.items():
        if name in skip or value.dim() not in (1, 2) or value.shape[0] != num_boxes:
            continue
        out[name] = _python_values(value)
        if value.dim() == 2 and value.shape[1] > 0 and value.dtype != torch.bool:
            out[f"{name}_mean"] = value.double().mean(dim=1).tolist()
    return out


def attribute_kind(values: list) -> str | None:
    """``"float"``, ``"int"``, ``"bool"``, ``"float_list"``... of per-box values (``None``: empty)."""
    if not values:
        return None
    first = values[0]
    if isinstance(first, list):
        return None if not first else f"{attribute_kind(first)}_list"
    if isinstance(first, bool):
        return "bool"
    return "int" if isinstance(first, int) else "float"


def label_names(labels: Tensor | np.ndarray, class_names: Sequence[str]) -> list[str]:
    """Contiguous labels ``1..C`` -> class names (``str(label)`` outside the known classes)."""
    names = []
    for label in np.asarray(labels).reshape(-1).tolist():
        k = int(label)
        names.append(class_names[k - 1] if 1 <= k <= len(class_names) else str(k))
    return names


# --------------------------------------------------------------------------------------------
# raw FiftyOne label documents


def detection_documents(
    boxes: Tensor | np.ndarray,
    labels: Sequence[str],
    orig_size: Sequence[int],
    confidence: Sequence[float] | None = None,
    attributes: Mapping[str, Sequence[Any]] | None = None,
) -> list[dict[str, Any]]:
    """FiftyOne ``Detection`` documents (as stored in its database), each with a new id."""
    from bson import ObjectId

    rel = relative_xywh(boxes, orig_size).tolist()
    attributes = attributes or {}
    docs = []
    for i, (box, label) in enumerate(zip(rel, labels)):
        doc = {"_id": ObjectId(), "_cls": "Detection", "attributes": {}, "tags": [], "label": label, "bounding_box": box}
        if confidence is not None:
            doc["confidence"] = _finite_or_none(confidence[i])
        for name, values in attributes.items():
            doc[name] = values[i]
        docs.append(doc)
    return docs


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def detections_document(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """A FiftyOne ``Detections`` document holding ``docs``."""
    return {"_cls": "Detections", "detections": docs}


def ground_truth_documents(record, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The boxes of a dataset ``ImageRecord`` (ignore flags as ``iscrowd``)."""
    size = (record.height, record.width)
    attributes = {"iscrowd": [bool(v) for v in np.asarray(record.ignore).reshape(-1)]}
    return detection_documents(record.boxes, label_names(record.labels, class_names), size, None, attributes)


def prediction_documents(trace, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The ``detections`` record: one document per detection, in record order."""
    det = trace["detections"]
    n = int(det["scores"].shape[0])
    return detection_documents(
        det["boxes"], label_names(det["labels"], class_names), trace.orig_size, det["scores"].tolist(),
        per_box_attributes(det, n),
    )


def proposal_documents(trace, max_proposals: int) -> list[dict[str, Any]]:
    """The first ``max_proposals`` boxes of ``rpn_proposals`` (sorted by decreasing score)."""
    record = trace.get("rpn_proposals")
    if record is None or max_proposals <= 0:
        return []
    k = min(int(record["scores"].shape[0]), max_proposals)
    fields = {name: value[:k] for name, value in record.items() if value.dim() >= 1 and value.shape[0] >= k}
    return detection_documents(
        fields["boxes"], [PROPOSAL_LABEL] * k, trace.orig_size, fields["scores"].tolist(), per_box_attributes(fields, k)
    )


def prediction_positions(nms: Mapping[str, Tensor], detections: Mapping[str, Tensor]) -> Tensor:
    """For each input box of the final NMS, the position of its detection in ``detections``
    (``-1``: suppressed, or kept but cut by the top-k). Detections are the kept boxes in keep
    order; raises ``WorkbenchError`` when the record says otherwise."""
    n = int(detections["scores"].shape[0])
    keep = nms["keep"][:n]
    if keep.shape[0] != n or not torch.equal(nms["scores"][keep], detections["scores"]):
        raise WorkbenchError("the trace's detections are not the first kept boxes of its final NMS (rcnn_nms)")
    positions = torch.full((int(nms["scores"].shape[0]),), -1, dtype=torch.int64)
    positions[keep] = torch.arange(n)
    return positions


def suppressed_documents(trace, class_names: Sequence[str], prediction_ids: Sequence[Any]) -> list[dict[str, Any]]:
    """Boxes the final NMS suppressed whose suppressor is an exported prediction."""
    nms, det = trace.get("rcnn_nms"), trace.get("detections")
    if nms is None or det is None:
        return []
    positions = prediction_positions(nms, det)
    suppressed = torch.where(nms["suppressed_by"] >= 0)[0]
    suppressor = positions[nms["suppressed_by"][suppressed]]
    chosen, suppressor = suppressed[suppressor >= 0], suppressor[suppressor >= 0]
    attributes = {
        "suppressed_by": [str(prediction_ids[int(p)]) for p in suppressor],
        "suppressor_iou": nms["suppressor_iou"][chosen].double().tolist(),
    }
    return detection_documents(
        nms["boxes"][chosen], label_names(nms["idxs"][chosen], class_names), trace.orig_size,
        nms["scores"][chosen].tolist(), attributes,
    )


def exported_suppressed_count(trace) -> int:
    """How many boxes :func:`suppressed_documents` exports for ``trace``."""
    nms, det = trace.get("rcnn_nms"), trace.get("detections")
    if nms is None or det is None:
        return 0
    positions = prediction_positions(nms, det)
    by = nms["suppressed_by"]
    return int((positions[by[by >= 0]] >= 0).sum())


# --------------------------------------------------------------------------------------------
# heatmaps


def map_records(trace) -> dict[str, str]:
    """Heatmap field name -> map record name (records named ``<field>_map``)."""
    return {name[: -len("_map")]: name for name in trace.records if name.endswith("_map") and len(name) > 4}


def heatmap_values(fields: Mapping[str, Tensor]) -> tuple[np.ndarray, str] | None:
    """The ``(H, W)`` float map of a map record and what it shows: the first field of
    ``HEATMAP_VALUE_FIELDS`` present, else the first 2-D floating field (``None`` if none)."""
    for name, sign, description in HEATMAP_VALUE_FIELDS:
        value = fields.get(name)
        if value is not None and value.dim() == 2:
            return (sign * value.double()).numpy(), description
    for name, value in fields.items():
        if value.dim() == 2 and value.is_floating_point():
            return value.double().numpy(), name
    return None


@dataclass
class HeatmapRange:
    """The finite value range of one heatmap field over a split."""

    low: float = math.inf
    high: float = -math.inf
    description: str = ""

    def update(self, values: np.ndarray, description: str) -> None:
        finite = values[np.isfinite(values)]
        if finite.size:
            self.low = min(self.low, float(finite.min()))
            self.high = max(self.high, float(finite.max()))
        self.description = description

    def to_uint8(self, values: np.ndarray) -> np.ndarray:
        span = self.high - self.low
        scaled = (values - self.low) / span if span > 0 else np.zeros_like(values)
        return np.clip(np.nan_to_num(scaled, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def heatmap_ranges(traces: Iterable) -> dict[str, HeatmapRange]:
    """Heatmap field -> value range over every trace (first pass of the export)."""
    ranges: dict[str, HeatmapRange] = {}
    for trace in traces:
        for field_name, record in map_records(trace).items():
            found = heatmap_values(trace[record])
            if found is not None:
                ranges.setdefault(field_name, HeatmapRange()).update(*found)
    return {k: r for k, r in ranges.items() if math.isfinite(r.low)}


def write_heatmap_png(values: np.ndarray, value_range: HeatmapRange, path: Path) -> None:
    """The map as an 8-bit grey PNG on ``value_range``, written atomically."""
    from PIL import Image

    with atomic_output(path) as f:
        Image.fromarray(value_range.to_uint8(values), mode="L").save(f, format="PNG")


# --------------------------------------------------------------------------------------------
# the dataset


@dataclass
class ExportSummary:
    """What :func:`export_traces` wrote."""

    name: str
    num_samples: int
    counts: dict[str, int] = field(default_factory=dict)
    heatmap_fields: list[str] = field(default_factory=list)
    evaluated: bool = False


def _fiftyone():
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    import fiftyone as fo

    return fo


_FIELD_TYPES = {"float": "FloatField", "int": "IntField", "bool": "BooleanField", "str": "StringField"}


def _declare(dataset, path: str, kind: str, declared: set[str]) -> None:
    """Add the embedded attribute ``path`` of ``kind`` to the schema once."""
    if path in declared:
        return
    fo = _fiftyone()
    if kind.endswith("_list"):
        base = _FIELD_TYPES.get(kind[: -len("_list")])
        if base is None:  # lists of lists: left to FiftyOne's dynamic schema
            declared.add(path)
            return
        dataset.add_sample_field(path, fo.ListField, subfield=getattr(fo, base))
    else:
        dataset.add_sample_field(path, getattr(fo, _FIELD_TYPES[kind]))
    declared.add(path)


def _declare_attributes(dataset, field_name: str, docs_per_sample: Sequence[list[dict]], declared: set[str]) -> None:
    """Declare every non-standard attribute found in the documents of one label field."""
    standard = {"_id", "_cls", "attributes", "tags", "label", "bounding_box", "confidence"}
    for docs in docs_per_sample:
        for doc in docs[:1]:
            for name, value in doc.items():
                path = f"{field_name}.detections.{name}"
                if name in standard or path in declared:
                    continue
                kind = "str" if isinstance(value, str) else attribute_kind([value])
                if kind is not None:
                    _declare(dataset, path, kind, declared)


def _metadata(path: Path, height: int, width: int):
    fo = _fiftyone()
    mime = mimetypes.guess_type(path.name)[0]
    size = path.stat().st_size if path.exists() else None
    return fo.ImageMetadata(width=int(width), height=int(height), size_bytes=size, mime_type=mime, num_channels=3)


def export_traces(
    traces,
    data,
    name: str,
    *,
    maps_dir: Path | None = None,
    max_proposals: int = DEFAULT_MAX_PROPOSALS,
    evaluate: bool = True,
    info: Mapping[str, Any] | None = None,
    progress: bool = False,
    chunk_size: int = CHUNK_SIZE,
):
    """Build (or replace) the persistent FiftyOne dataset ``name`` from ``traces`` (a
    :class:`~workbench.inspection.TraceSet` or a sequence of ``ImageTrace``) and the
    ``DetectionDataset`` ``data`` they were predicted on. Heatmap PNGs go to ``maps_dir``
    (required when the traces hold maps). Returns ``(fiftyone.Dataset, ExportSummary)``."""
    fo = _fiftyone()
    class_names = list(data.class_names)
    traces = list(traces) if not isinstance(traces, Sequence) else traces
    indices = [_dataset_index(data, t.image_id) for t in traces]
    ranges = heatmap_ranges(traces)
    if ranges and maps_dir is None:
        raise WorkbenchError("the traces hold maps: give a folder for the heatmap images (maps_dir)")
    if maps_dir is not None and Path(maps_dir).exists():
        shutil.rmtree(maps_dir)

    dataset = fo.Dataset(name, persistent=True, overwrite=True)
    filepaths = [str(data.image_path(i).resolve()) for i in indices]
    sample_ids = dataset.add_samples([fo.Sample(filepath=p) for p in filepaths], progress=progress)
    for label_field in ("ground_truth", "predictions", "proposals", "suppressed"):
        dataset.add_sample_field(label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    for field_name in ranges:
        dataset.add_sample_field(field_name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Heatmap)
    declared: set[str] = set()
    counts = {"ground_truth": 0, "predictions": 0, "proposals": 0, "suppressed": 0}
    for start in range(0, len(traces), chunk_size):
        stop = min(start + chunk_size, len(traces))
        chunk = [traces[i] for i in range(start, stop)]
        ids = sample_ids[start:stop]
        _write_chunk(dataset, ids, chunk, indices[start:stop], data, class_names, max_proposals, declared, counts)
        _write_heatmaps(dataset, ids, chunk, ranges, maps_dir)
    dataset.default_classes = class_names
    dataset.app_config.active_fields = fo.ActiveFields(paths=list(SHOWN_FIELDS) + sorted(ranges))
    dataset.info = {**dict(info or {}), "max_proposals": max_proposals,
                    "heatmaps": {k: {"range": [r.low, r.high], "value": r.description} for k, r in ranges.items()}}
    dataset.save()
    evaluated = evaluate and len(dataset) > 0
    if evaluated:
        evaluate_dataset(dataset, class_names, progress=progress)
    summary = ExportSummary(name, len(dataset), counts, sorted(ranges), evaluated)
    return dataset, summary


def evaluate_dataset(dataset, class_names: Sequence[str], *, progress: bool = False):
    """COCO-style evaluation ``eval`` of ``predictions`` against ``ground_truth`` of a dataset
    or view (crowd boxes ignored, mAP computed); returns FiftyOne's results object.

    FiftyOne saves every evaluated sample through its document layer, whose cost grows faster
    than linearly with the boxes per sample (see ``docs/benchmarks.md``): with 100 predictions
    per image it dominates the export; ``workbench export fiftyone --no-eval`` skips it."""
    return dataset.evaluate_detections(
        "predictions", gt_field="ground_truth", eval_key=EVAL_KEY, method="coco", iou=0.5,
        compute_mAP=True, iscrowd="iscrowd", classes=list(class_names), progress=progress,
    )


def _dataset_index(data, image_id: int) -> int:
    try:
        return data.index_of(int(image_id))
    except KeyError:
        raise WorkbenchError(f"image id {image_id} of the traces is not in the dataset {data.source}") from None


def _write_chunk(dataset, ids, chunk, indices, data, class_names, max_proposals, declared, counts) -> None:
    """Metadata and the four box fields of one chunk of samples, one ``set_values`` per field."""
    metadata, fields = [], {"ground_truth": [], "predictions": [], "proposals": [], "suppressed": []}
    for trace, index in zip(chunk, indices):
        record = data.records[index]
        metadata.append(_metadata(data.image_path(index), record.height, record.width))
        predictions = prediction_documents(trace, class_names)
        fields["ground_truth"].append(ground_truth_documents(record, class_names))
        fields["predictions"].append(predictions)
        fields["proposals"].append(proposal_documents(trace, max_proposals))
        fields["suppressed"].append(suppressed_documents(trace, class_names, [d["_id"] for d in predictions]))
    dataset.set_values("metadata", dict(zip(ids, metadata)), key_field="id")
    for field_name, docs_per_sample in fields.items():
        _declare_attributes(dataset, field_name, docs_per_sample, declared)
        values = {sid: detections_document(docs) for sid, docs in zip(ids, docs_per_sample)}
        dataset.set_values(field_name, values, key_field="id", validate=False, expand_schema=False)
        counts[field_name] += sum(len(d) for d in docs_per_sample)


def _write_heatmaps(dataset, ids, chunk, ranges: Mapping[str, HeatmapRange], maps_dir: Path | None) -> None:
    fo = _fiftyone()
    for field_name, value_range in ranges.items():
        values = {}
        for sid, trace in zip(ids, chunk):
            record = map_records(trace).get(field_name)
            found = None if record is None else heatmap_values(trace[record])
            if found is None:
                continue
            path = Path(maps_dir) / field_name / f"{trace.image_id}.png"
            write_heatmap_png(found[0], value_range, path)
            values[sid] = fo.Heatmap(map_path=str(path.resolve()), range=[0, 255],
                                     value_range=[value_range.low, value_range.high], value=found[1])
        if values:
            dataset.set_values(field_name, values, key_field="id")


def export_run(
    run_dir: Path | str,
    *,
    split: str | None = None,
    name: str | None = None,
    max_proposals: int = DEFAULT_MAX_PROPOSALS,
    evaluate: bool = True,
    progress: bool = False,
    device: str = "auto",
):
    """``workbench export fiftyone``: export the traces of ``split`` (default: the run's
    validation split) of a run as the FiftyOne dataset ``name`` (default
    :func:`default_dataset_name`), replacing a dataset of that name. Traces that do not exist
    yet are predicted first (best checkpoint). Returns ``(fiftyone.Dataset, ExportSummary)``."""
    from workbench.data.sources import open_dataset
    from workbench.engine.trainer import load_run_config
    from workbench.inspection.traces import load_traces, trace_dir

    run_dir = Path(run_dir)
    split = split or load_run_config(run_dir).data.val_split
    if not (trace_dir(run_dir, split) / "manifest.json").is_file():
        from workbench.engine.predict import predict_run

        log.info("no traces of split %s in %s: predicting with traces first", split, run_dir)
        predict_run(run_dir, split=split, device=device, progress=progress, trace=True)
    traces = load_traces(run_dir, split)
    spec = traces.meta.get("data") or load_run_config(run_dir).data.spec
    data = open_dataset(spec, split, image_dir=traces.meta.get("image_dir"), progress=progress)
    name = name or default_dataset_name(run_dir, split)
    info = {"run": str(run_dir.resolve()), "method": traces.method, "split": split,
            "trace_format_version": traces.version}
    return export_traces(traces, data, name, maps_dir=run_dir / "fiftyone" / name, max_proposals=max_proposals,
                         evaluate=evaluate, info=info, progress=progress)


__all__ = [
    "DEFAULT_MAX_PROPOSALS",
    "EVAL_KEY",
    "ExportSummary",
    "default_dataset_name",
    "evaluate_dataset",
    "export_run",
    "export_traces",
    "relative_xywh",
]
