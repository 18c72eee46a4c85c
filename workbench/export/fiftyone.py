"""A run's traces as a persistent FiftyOne dataset, for browsing errors in the FiftyOne App.

One sample per traced image (``RUN/traces/<split>``, see :mod:`workbench.inspection.traces`),
with image ``metadata``, ``ground_truth`` (``Detections``: the dataset's boxes; crowd / ignore
boxes, COCO ``iscrowd`` or VOC ``difficult``, carry ``iscrowd=True`` and the evaluation ignores
them) and one field per view the traces' method declares (:class:`workbench.methods.RecordView`,
``Method.record_views``; nothing here knows a method or a method's record):

- a ``"boxes"`` view -> a ``Detections`` field: the record's boxes (the first ``max_boxes``,
  i.e. the highest-scored), ``confidence`` = score, label = class name (or the view's
  ``box_label`` for boxes without labels), and the record's per-box fields as attributes: a
  declared ``"attribute"`` view names its field, other per-box fields keep their record names;
  a ``(N,)`` tensor becomes a number per box, a ``(N, K)`` tensor a list of ``K`` numbers plus
  ``<name>_mean`` (their mean, a number the App can filter on);
- a ``"suppressed"`` view -> a ``Detections`` field of the boxes the NMS record suppressed, with
  ``confidence`` (their score), ``suppressed_by`` (the FiftyOne id of the kept box, in the field
  of the :data:`~workbench.records.DETECTIONS` view of the same sample, that suppressed it) and
  ``suppressor_iou``. A kept box beyond the detector's top-k cut is not exported; the boxes it
  suppressed are left out, so every ``suppressed_by`` names an exported box;
- a ``"heatmap"`` view (with ``app=True``) -> a ``Heatmap`` field: the record's map field spread
  over the image's pixels (:func:`workbench.inspection.maps.record_map_pixels`), written as
  8-bit PNGs under ``RUN/fiftyone/<dataset name>/<field>/`` on one value range for the whole
  split (the heatmap's ``value_range`` attribute gives it, ``value`` says what it shows);
- the evaluation ``eval`` of the :data:`~workbench.records.DETECTIONS` view's field against the
  ground truth: pycocotools' COCO matching at IoU 0.5 (:mod:`workbench.evaluation.matching`)
  written as FiftyOne's COCO-style ``evaluate_detections`` writes it, ``eval_tp`` / ``eval_fp``
  / ``eval_fn`` per sample and ``eval`` (``"tp"``, ``"fp"``, ``"fn"``), ``eval_id``,
  ``eval_iou`` per box, registered as a FiftyOne COCO evaluation with its results (mAP, PR
  curves), so the App filters by it; the labels carry it when they are first written, which
  keeps it to seconds where FiftyOne's own evaluation saves every sample again.

Several runs of one split go into one dataset (:func:`export_runs`): the samples and the ground
truth once, each run's fields prefixed ``<run>_`` and its evaluation under the key
``<run>_eval``; saved views compare them (:func:`saved_view_specs`).

Each field's and attribute's schema ``description`` is its view's ``label``, and
``dataset.info["fields"]`` maps every field to it, so the App says what each field shows.
Every numeric per-box attribute (a score a method adds, a predicted IoU, an uncertainty) is a
declared ``FloatField`` of its boxes, so the App's sidebar filters the boxes on a range of it and
Python does the same with ``dataset.filter_labels(field, F(attribute) >= value)``, alone or with
the evaluation (``(F("eval") == "fp") & (F(attribute) >= value)``).

Boxes cross here, and only here, from absolute ``xyxy`` pixels to FiftyOne's relative
``[x, y, w, h]`` (:func:`relative_xywh`). Samples are added by file path first, then each field
is written for a chunk of samples with ``set_values`` (raw label documents), which keeps 2,000
samples with hundreds of boxes each within seconds. The fields of every run and their
evaluations are declared in one schema merge before the values, the attributes found in the
values in one after them: FiftyOne saves and reloads the dataset's document on each schema
change, so declaring fields one at a time costs about the square of the number of runs.
"""

from __future__ import annotations

import logging
import math
import mimetypes
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench import records as R
from workbench.atomic import atomic_output
from workbench.inspection.maps import record_map_pixels
from workbench.methods import RecordView, record_views
from workbench.errors import WorkbenchError
from workbench.export.database import import_fiftyone

log = logging.getLogger(__name__)

#: The default limit of boxes for views that declare one (``max_boxes``), e.g. proposals.
DEFAULT_MAX_PROPOSALS = 100
EVAL_KEY = "eval"
#: The IoU at which a detection counts as a true positive.
EVAL_IOU = 0.5
CHUNK_SIZE = 500
GT_FIELD = "ground_truth"
#: Fields of a box record that are not per-box extras.
BOX_FIELDS = R.BOX_FIELDS


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


def box_attributes(
    fields: Mapping[str, Tensor], num_boxes: int, attribute_views: Sequence[RecordView] = ()
) -> dict[str, list]:
    """Per-box attributes of a box record: declared ``"attribute"`` views under their ``field``
    names, every other per-box field under its own (see :func:`per_box_attributes`)."""
    renamed = {v.value_field: v.field for v in attribute_views}
    return per_box_attributes({renamed.get(name, name): value for name, value in fields.items()}, num_boxes)


def box_documents(
    trace,
    view: RecordView,
    class_names: Sequence[str],
    attribute_views: Sequence[RecordView] = (),
    max_boxes: int | None = None,
) -> list[dict[str, Any]]:
    """The boxes of ``view``'s record (a ``"boxes"`` view): the first ``max_boxes`` (``None``:
    all), in record order, with their per-box attributes."""
    record = trace.get(view.record)
    if record is None or R.SCORES not in record:
        return []
    n = int(record[R.SCORES].shape[0])
    k = n if max_boxes is None else max(0, min(n, int(max_boxes)))
    fields = {name: value[:k] for name, value in record.items() if value.dim() >= 1 and value.shape[0] == n}
    if R.LABELS in fields:
        labels = label_names(fields[R.LABELS], class_names)
    else:
        labels = [view.box_label or view.field] * k
    return detection_documents(
        fields[R.BOXES], labels, trace.orig_size, fields[R.SCORES].tolist(),
        box_attributes(fields, k, attribute_views),
    )


def prediction_positions(
    nms: Mapping[str, Tensor], detections: Mapping[str, Tensor], nms_record: str = R.FINAL_NMS
) -> Tensor:
    """For each input box of the final NMS, the position of its detection in ``detections``
    (``-1``: suppressed, or kept but cut by the top-k). Detections are the kept boxes in keep
    order; raises ``WorkbenchError`` when the record says otherwise."""
    n = int(detections["scores"].shape[0])
    keep = nms["keep"][:n]
    if keep.shape[0] != n or not torch.equal(nms["scores"][keep], detections["scores"]):
        raise WorkbenchError(f"the trace's kept boxes are not the first kept boxes of its NMS record {nms_record!r}")
    positions = torch.full((int(nms["scores"].shape[0]),), -1, dtype=torch.int64)
    positions[keep] = torch.arange(n)
    return positions


def suppressed_documents(
    trace,
    class_names: Sequence[str],
    prediction_ids: Sequence[Any],
    nms_record: str = R.FINAL_NMS,
    kept_record: str = R.DETECTIONS,
) -> list[dict[str, Any]]:
    """Boxes the NMS record ``nms_record`` suppressed whose suppressor is an exported box of
    ``kept_record`` (``prediction_ids``: the FiftyOne ids of those, in record order)."""
    nms, det = trace.get(nms_record), trace.get(kept_record)
    if nms is None or det is None:
        return []
    positions = prediction_positions(nms, det, nms_record)
    suppressed = torch.where(nms[R.NMS_SUPPRESSED_BY] >= 0)[0]
    suppressor = positions[nms[R.NMS_SUPPRESSED_BY][suppressed]]
    chosen, suppressor = suppressed[suppressor >= 0], suppressor[suppressor >= 0]
    attributes = {
        "suppressed_by": [str(prediction_ids[int(p)]) for p in suppressor],
        "suppressor_iou": nms[R.NMS_SUPPRESSOR_IOU][chosen].double().tolist(),
    }
    return detection_documents(
        nms[R.BOXES][chosen], label_names(nms[R.NMS_GROUPS][chosen], class_names), trace.orig_size,
        nms[R.SCORES][chosen].tolist(), attributes,
    )


def exported_suppressed_count(trace, nms_record: str = R.FINAL_NMS, kept_record: str = R.DETECTIONS) -> int:
    """How many boxes :func:`suppressed_documents` exports for ``trace``."""
    nms, det = trace.get(nms_record), trace.get(kept_record)
    if nms is None or det is None:
        return 0
    positions = prediction_positions(nms, det, nms_record)
    by = nms[R.NMS_SUPPRESSED_BY]
    return int((positions[by[by >= 0]] >= 0).sum())


# --------------------------------------------------------------------------------------------
# heatmaps


def heatmap_pixels(trace, view: RecordView) -> np.ndarray | None:
    """The map of a ``"heatmap"`` view for one trace, over the original image's pixels
    (``None`` when the trace lacks the record or its field)."""
    record = trace.get(view.record)
    if record is None or view.value_field not in record:
        return None
    return record_map_pixels(record, view.value_field, trace.orig_size).astype(np.float64)


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


def heatmap_ranges(traces: Iterable, views: Sequence[RecordView]) -> dict[str, HeatmapRange]:
    """Heatmap field -> value range over every trace (first pass of the export), for the
    ``"heatmap"`` views among ``views``."""
    ranges: dict[str, HeatmapRange] = {}
    heatmaps = [v for v in views if v.kind == "heatmap"]
    for trace in traces:
        _update_ranges(ranges, trace, heatmaps)
    return _finite_ranges(ranges)


def _update_ranges(ranges: dict[str, HeatmapRange], trace, heatmaps: Sequence[RecordView]) -> None:
    for view in heatmaps:
        values = heatmap_pixels(trace, view)
        if values is not None:
            ranges.setdefault(view.field, HeatmapRange()).update(values, view.title)


def _finite_ranges(ranges: dict[str, HeatmapRange]) -> dict[str, HeatmapRange]:
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
    return import_fiftyone()


_FIELD_TYPES = {"float": "FloatField", "int": "IntField", "bool": "BooleanField", "str": "StringField"}


def _schema_field(path: str, ftype, **kwargs):
    """The FiftyOne field of ``path`` as ``add_sample_field(path, ftype, **kwargs)`` creates it."""
    from fiftyone.core.odm.utils import create_field

    return create_field(path.rsplit(".", 1)[-1], ftype, **kwargs)


def _attribute_field(path: str, kind: str, description: str | None = None):
    """The FiftyOne field of an embedded attribute of ``kind`` (:func:`attribute_kind`, or
    ``"str"``); ``None`` for lists of lists, which are left to FiftyOne's dynamic schema."""
    fo = _fiftyone()
    if kind.endswith("_list"):
        base = _FIELD_TYPES.get(kind[: -len("_list")])
        if base is None:
            return None
        return _schema_field(path, fo.ListField, subfield=getattr(fo, base), description=description)
    return _schema_field(path, getattr(fo, _FIELD_TYPES[kind]), description=description)


def _declare_fields(dataset, schema: Mapping[str, Any]) -> None:
    """Add the fields of ``schema`` (path -> FiftyOne field; embedded paths after their parents;
    ``None`` values are skipped) to the dataset in one schema merge. Each schema change saves and reloads the
    dataset's document, whose size grows with every field: declared one at a time, the fields of
    many runs cost about the square of their number (``docs/benchmarks.md``). Paths already
    declared with the same type are left as they are."""
    schema = {path: f for path, f in schema.items() if f is not None}
    if schema:
        dataset.add_dynamic_sample_fields(schema)


def _label_field(path: str, embedded_doc_type, description: str):
    """A ``Detections`` or ``Heatmap`` sample field."""
    return _schema_field(path, _fiftyone().EmbeddedDocumentField, embedded_doc_type=embedded_doc_type,
                         description=description)


def _attribute_schema(
    field_name: str, docs_per_sample: Sequence[list[dict]], schema: dict[str, Any],
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Add to ``schema`` every non-standard attribute found in the documents of one label field
    that it lacks (``descriptions``: attribute name -> what it shows); the first document of a
    sample that has one gives an attribute's type."""
    standard = {"_id", "_cls", "attributes", "tags", "label", "bounding_box", "confidence"}
    descriptions = descriptions or {}
    for docs in docs_per_sample:
        for doc in docs[:1]:
            for name, value in doc.items():
                path = f"{field_name}.detections.{name}"
                if name in standard or path in schema:
                    continue
                kind = "str" if isinstance(value, str) else attribute_kind([value])
                if kind is not None:
                    description = descriptions.get(name)
                    if description is None and name.endswith("_mean") and name[: -len("_mean")] in descriptions:
                        description = f"mean of: {descriptions[name[: -len('_mean')]]}"
                    schema[path] = _attribute_field(path, kind, description)


def _metadata(path: Path, height: int, width: int):
    fo = _fiftyone()
    mime = mimetypes.guess_type(path.name)[0]
    size = path.stat().st_size if path.exists() else None
    return fo.ImageMetadata(width=int(width), height=int(height), size_bytes=size, mime_type=mime, num_channels=3)


@dataclass(frozen=True)
class ExportPlan:
    """The declared views, sorted by what the export does with them."""

    boxes: tuple[RecordView, ...]
    suppressed: tuple[RecordView, ...]
    heatmaps: tuple[RecordView, ...]
    attributes: tuple[RecordView, ...]

    @classmethod
    def of(cls, views: Sequence[RecordView]) -> "ExportPlan":
        shown = [v for v in views if v.app]
        fields = [v.field for v in shown if v.kind != "attribute"]
        clash = {f for f in fields if fields.count(f) > 1} | ({GT_FIELD} & set(fields))
        if clash:
            raise WorkbenchError(f"two views (or a view and the ground truth) export the field(s) {sorted(clash)}")
        return cls(*(tuple(v for v in shown if v.kind == kind) for kind in ("boxes", "suppressed", "heatmap", "attribute")))

    @property
    def kept(self) -> RecordView | None:
        """The boxes view of the detections: evaluated, and what suppressed boxes link to."""
        return next((v for v in self.boxes if v.record == R.DETECTIONS), None)

    def attributes_of(self, record: str) -> tuple[RecordView, ...]:
        return tuple(v for v in self.attributes if v.record == record)

    def box_fields(self) -> list[str]:
        return [v.field for v in (*self.boxes, *self.suppressed)]

    def descriptions(self) -> dict[str, str]:
        return {v.field: v.title for v in (*self.boxes, *self.suppressed, *self.heatmaps)}


@dataclass
class RunPart:
    """One run's part of a dataset: its traces (aligned with the dataset's images), what it
    shows (:class:`ExportPlan`), the prefix of its fields (``""`` for a dataset of one run) and
    its evaluation key."""

    name: str
    traces: Sequence
    plan: ExportPlan
    prefix: str = ""
    eval_key: str = EVAL_KEY
    maps_dir: Path | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def field(self, name: str) -> str:
        return self.prefix + name

    @property
    def kept_field(self) -> str | None:
        kept = self.plan.kept
        return None if kept is None else self.field(kept.field)


def export_traces(
    traces,
    data,
    name: str,
    *,
    views: Sequence[RecordView] | None = None,
    maps_dir: Path | None = None,
    max_proposals: int | None = DEFAULT_MAX_PROPOSALS,
    evaluate: bool = True,
    info: Mapping[str, Any] | None = None,
    progress: bool = False,
    chunk_size: int = CHUNK_SIZE,
):
    """Build (or replace) the persistent FiftyOne dataset ``name`` from ``traces`` (a
    :class:`~workbench.inspection.TraceSet` or a sequence of ``ImageTrace``) and the
    ``DetectionDataset`` ``data`` they were predicted on.

    ``views``: what to export (default: the views the traces' method declares,
    :func:`workbench.methods.record_views`). ``max_proposals``: the limit of every boxes view
    that declares one (``max_boxes``; ``None``: the declared limits). Heatmap PNGs go to
    ``maps_dir`` (required when the traces hold maps). Returns ``(fiftyone.Dataset, ExportSummary)``."""
    if views is None:
        views = record_views(getattr(traces, "method", None))
    traces = list(traces) if not isinstance(traces, Sequence) else traces
    run_name = Path(str((info or {}).get("run", "run"))).name
    part = RunPart(run_name, traces, ExportPlan.of(views), maps_dir=maps_dir, info=dict(info or {}))
    return build_dataset(data, name, [part], info=info, max_proposals=max_proposals, evaluate=evaluate,
                         progress=progress, chunk_size=chunk_size)


def trace_image_ids(traces) -> list[int]:
    """The image ids of ``traces`` in order: from a trace set's manifest (``image_ids``) when it
    has one, so that listing them reads no shard; else from each trace."""
    ids = getattr(traces, "image_ids", None)
    return [int(i) for i in ids] if ids is not None else [int(t.image_id) for t in traces]


def build_dataset(
    data,
    name: str,
    parts: Sequence[RunPart],
    *,
    update: bool = False,
    info: Mapping[str, Any] | None = None,
    max_proposals: int | None = DEFAULT_MAX_PROPOSALS,
    evaluate: bool = True,
    progress: bool = False,
    chunk_size: int = CHUNK_SIZE,
):
    """The dataset ``name`` of the runs ``parts`` (each :class:`RunPart`'s traces in the same
    image order) on ``data``. ``update``: keep a dataset of that name (the same images) and
    replace only the fields and evaluations of ``parts`` in it; otherwise the dataset is built
    anew. Returns ``(fiftyone.Dataset, ExportSummary)`` (the summary counts every part's fields)."""
    fo = _fiftyone()
    class_names = list(data.class_names)
    traces0 = parts[0].traces
    ids0 = trace_image_ids(traces0)
    indices = [_dataset_index(data, i) for i in ids0]
    for part in parts:
        if trace_image_ids(part.traces) != ids0:
            raise WorkbenchError(f"the traces of run {part.name!r} are not of the same images as those of "
                                 f"run {parts[0].name!r}")
    limit = None if max_proposals is None else int(max_proposals)
    evaluated = [p for p in parts if evaluate and len(indices) > 0 and p.plan.kept is not None]
    first = {part.name: _first_pass(part, data, indices, limit, part in evaluated) for part in parts}
    ranges = {run: run_ranges for run, (run_ranges, _) in first.items()}
    for part in parts:
        if ranges[part.name] and part.maps_dir is None:
            raise WorkbenchError("the traces hold maps: give a folder for the heatmap images (maps_dir)")
        if part.maps_dir is not None and Path(part.maps_dir).exists():
            shutil.rmtree(part.maps_dir)

    filepaths = [str(data.image_path(i).resolve()) for i in indices]
    existing = update and name in fo.list_datasets()
    if existing:
        dataset = fo.load_dataset(name)
        by_path = dict(zip(dataset.values("filepath"), dataset.values("id")))
        missing = [p for p in filepaths if p not in by_path]
        if missing or len(by_path) != len(filepaths):
            raise WorkbenchError(f"the FiftyOne dataset {name!r} holds other images than the traces "
                                 f"({len(by_path)} samples, {len(missing)} traced images not among them); "
                                 f"export under another --name")
        sample_ids = [by_path[p] for p in filepaths]
        held = {k: dataset.info.get(k) for k in ("split", "data")}
        given = {k: (info or {}).get(k) for k in ("split", "data")}
        if any(held[k] is not None and given[k] is not None and held[k] != given[k] for k in held):
            raise WorkbenchError(f"the FiftyOne dataset {name!r} holds split {held['split']!r} of {held['data']}; "
                                 f"these runs are of split {given['split']!r} of {given['data']}: "
                                 f"export them under another --name")
        for part in parts:
            _remove_run(dataset, part)
    else:
        dataset = fo.Dataset(name, persistent=True, overwrite=True)
        sample_ids = dataset.add_samples([fo.Sample(filepath=p) for p in filepaths], progress=progress)
    schema = {} if existing else {GT_FIELD: _label_field(GT_FIELD, fo.Detections, "ground-truth boxes of the dataset")}
    descriptions = {}
    heatmaps = {}
    for part in parts:
        described = part.plan.descriptions()
        for label_field in part.plan.box_fields():
            descriptions[part.field(label_field)] = described[label_field]
            schema[part.field(label_field)] = _label_field(part.field(label_field), fo.Detections,
                                                           described[label_field])
        heatmaps[part.name] = [v for v in part.plan.heatmaps if v.field in ranges[part.name]]
        for view in heatmaps[part.name]:
            descriptions[part.field(view.field)] = view.title
            schema[part.field(view.field)] = _label_field(part.field(view.field), fo.Heatmap, view.title)
        if part in evaluated:
            schema.update(evaluation_schema(part.kept_field, part.eval_key))
    _declare_fields(dataset, schema)

    matches = {p.name: _match(first[p.name][1], data) for p in evaluated}
    evaluations = {p.name: _register_evaluation(dataset, p) for p in evaluated}

    attributes: dict[str, Any] = {}
    counts = {GT_FIELD: 0} if not existing else {}
    for part in parts:
        counts.update({part.field(f): 0 for f in part.plan.box_fields()})
    tallies = {p.name: ([], [], []) for p in evaluated}
    tuples = {p.name: [] for p in evaluated}
    for start in range(0, len(indices), chunk_size):
        stop = min(start + chunk_size, len(indices))
        ids = sample_ids[start:stop]
        if existing:
            gt_docs = [(d or {}).get("detections", []) for d in dataset.select(ids, ordered=True).values(GT_FIELD, _raw=True)]
        else:
            gt_docs = [ground_truth_documents(data.records[i], class_names) for i in indices[start:stop]]
            counts[GT_FIELD] += sum(len(d) for d in gt_docs)
        for part in parts:
            chunk = [part.traces[i] for i in range(start, stop)]
            fields = _run_documents(part, chunk, class_names, limit)
            if part.name in matches:
                kept = part.kept_field
                for j, (gts, preds) in enumerate(zip(gt_docs, fields[kept])):
                    image = matches[part.name].images[start + j]
                    mark_matches(gts, preds, image, part.eval_key)
                    tuples[part.name].extend(match_tuples(gts, preds, part.eval_key))
                    for tally, value in zip(tallies[part.name], (image.tp, image.fp, image.fn)):
                        tally.append(value)
            _write_fields(dataset, ids, part, fields, attributes, counts)
            _write_heatmaps(dataset, ids, chunk, heatmaps[part.name], ranges[part.name], part)
        if not existing:
            metadata = [_metadata(data.image_path(i), data.records[i].height, data.records[i].width)
                        for i in indices[start:stop]]
            dataset.set_values("metadata", dict(zip(ids, metadata)), key_field="id")
        dataset.set_values(GT_FIELD, {sid: detections_document(d) for sid, d in zip(ids, gt_docs)},
                           key_field="id", validate=False, expand_schema=False)
    _declare_fields(dataset, attributes)
    for part in evaluated:
        key = part.eval_key
        for suffix, values in zip(("tp", "fp", "fn"), tallies[part.name]):
            dataset.set_values(f"{key}_{suffix}", dict(zip(sample_ids, values)), key_field="id")
        _save_evaluation(dataset, part, evaluations[part.name], matches[part.name], tuples[part.name], class_names)

    dataset.default_classes = class_names
    previous = dict(dataset.info) if existing else {}
    run_info = dict(previous.get("runs", {}))
    all_ranges = dict(previous.get("heatmaps", {}))
    for part in parts:
        shown = [part.field(v.field) for v in (*part.plan.boxes, *part.plan.suppressed, *heatmaps[part.name])]
        all_ranges.update({part.field(k): {"range": [r.low, r.high], "value": r.description}
                           for k, r in ranges[part.name].items()})
        run_info[part.name] = {
            **dict(part.info), "prefix": part.prefix, "fields": shown, "predictions": part.kept_field,
            "eval_key": part.eval_key if part in evaluated else None,
            "uncertainty": [part.field(f) for f in _uncertainty_paths(part)],
        }
    fields_info = {GT_FIELD: "ground-truth boxes of the dataset", **dict(previous.get("fields", {}))}
    fields_info.update({k: v for k, v in descriptions.items() if k in counts or k in all_ranges})
    dataset.info = {**previous, **dict(info or {}), "max_proposals": limit, "fields": fields_info,
                    "heatmaps": all_ranges, "runs": run_info}
    active = [GT_FIELD] + [f for part in parts for v in (*part.plan.boxes, *part.plan.suppressed,
                                                        *heatmaps[part.name]) if v.shown for f in [part.field(v.field)]]
    if existing and dataset.app_config.active_fields is not None:
        active = list(dict.fromkeys([*(dataset.app_config.active_fields.paths or []), *active]))
    dataset.app_config.active_fields = fo.ActiveFields(paths=active)
    dataset.save()
    save_views(dataset)
    summary = ExportSummary(name, len(dataset), counts, sorted(all_ranges), bool(evaluated))
    return dataset, summary


def _run_documents(part: RunPart, chunk, class_names, limit) -> dict[str, list[list[dict]]]:
    """Field (prefixed) -> label documents per sample, of one run for one chunk of samples."""
    plan = part.plan
    fields: dict[str, list] = {part.field(f): [] for f in plan.box_fields()}
    kept = plan.kept
    for trace in chunk:
        for view in plan.boxes:
            max_boxes = view.max_boxes if view.max_boxes is None or limit is None else limit
            fields[part.field(view.field)].append(
                box_documents(trace, view, class_names, plan.attributes_of(view.record), max_boxes))
        for view in plan.suppressed:
            if kept is None:
                fields[part.field(view.field)].append([])
                continue
            kept_ids = [d["_id"] for d in fields[part.field(kept.field)][-1]]
            fields[part.field(view.field)].append(
                suppressed_documents(trace, class_names, kept_ids, view.record, kept.record))
    return fields


def _write_fields(dataset, ids, part: RunPart, fields, attributes: dict[str, Any], counts) -> None:
    """One ``set_values`` per field of one run for one chunk. The values are written as they
    are, without validation; their attributes are gathered into ``attributes`` (path -> field),
    which :func:`build_dataset` declares once for every run after the last chunk."""
    for field_name, docs_per_sample in fields.items():
        view = next((v for v in part.plan.boxes if part.field(v.field) == field_name), None)
        attribute_views = part.plan.attributes_of(view.record) if view is not None else ()
        _attribute_schema(field_name, docs_per_sample, attributes, {v.field: v.title for v in attribute_views})
        values = {sid: detections_document(docs) for sid, docs in zip(ids, docs_per_sample)}
        dataset.set_values(field_name, values, key_field="id", validate=False, expand_schema=False)
        counts[field_name] += sum(len(d) for d in docs_per_sample)


# --------------------------------------------------------------------------------------------
# evaluation: pycocotools' matching, written as FiftyOne's COCO evaluation writes it


def evaluation_boxes(record, trace, view: RecordView | None, max_boxes: int | None):
    """``(ground truth, detections)`` of one image as :class:`~workbench.evaluation.matching.ImageBoxes`
    (the detections: the first ``max_boxes`` of ``view``'s record, as exported)."""
    from workbench.evaluation.matching import ImageBoxes

    gt = ImageBoxes.of(record.boxes, record.labels, crowd=np.asarray(record.ignore).astype(bool))
    box_record = None if view is None else trace.get(view.record)
    if box_record is None or R.SCORES not in box_record:
        return gt, ImageBoxes.of(np.zeros((0, 4)), [], scores=[])
    n = int(box_record[R.SCORES].shape[0])
    k = n if max_boxes is None else max(0, min(n, int(max_boxes)))
    labels = box_record[R.LABELS][:k] if R.LABELS in box_record else torch.zeros(k, dtype=torch.int64)
    return gt, ImageBoxes.of(box_record[R.BOXES][:k].double().numpy(), labels.numpy(),
                             scores=box_record[R.SCORES][:k].double().numpy())


def _first_pass(part: RunPart, data, indices, limit, evaluate: bool):
    """One read of a run's traces (none when it shows no heatmap and is not evaluated): the value
    range of each heatmap and, with ``evaluate``, the ``(ground truth, detections)`` boxes of
    each image for the matching."""
    heatmaps = part.plan.heatmaps
    kept = part.plan.kept
    max_boxes = None if kept is None else (kept.max_boxes if kept.max_boxes is None or limit is None else limit)
    ranges: dict[str, HeatmapRange] = {}
    pairs = []
    if not heatmaps and not evaluate:
        return {}, pairs
    for index, trace in zip(indices, part.traces):
        _update_ranges(ranges, trace, heatmaps)
        if evaluate:
            pairs.append(evaluation_boxes(data.records[index], trace, kept, max_boxes))
    return _finite_ranges(ranges), pairs


def _match(pairs, data):
    from workbench.evaluation.matching import match_detections

    return match_detections([g for g, _ in pairs], [d for _, d in pairs], range(1, len(data.class_names) + 1),
                            iou_threshold=EVAL_IOU)


def mark_matches(gt_docs: list[dict], pred_docs: list[dict], matches, eval_key: str) -> None:
    """Write one image's matches into its label documents as FiftyOne's COCO evaluation does:
    ``<key>`` (``"tp"`` / ``"fp"`` / ``"fn"``), ``<key>_id`` (the matched label's id, ``""``
    for none) and ``<key>_iou`` (``None`` for none)."""
    id_key, iou_key = f"{eval_key}_id", f"{eval_key}_iou"
    for docs, other, outcome, miss in ((pred_docs, gt_docs, matches.det_gt, "fp"),
                                       (gt_docs, pred_docs, matches.gt_det, "fn")):
        ious = (matches.det_iou if docs is pred_docs else matches.gt_iou).tolist()
        for doc, j, iou in zip(docs, outcome.tolist(), ious):
            matched = j >= 0
            doc[eval_key] = "tp" if matched else miss
            doc[id_key] = str(other[j]["_id"]) if matched else ""
            doc[iou_key] = iou if matched else None


def _evaluation_config(part: RunPart):
    from fiftyone.utils.eval.coco import COCOEvaluationConfig

    return COCOEvaluationConfig(part.kept_field, GT_FIELD, iou=EVAL_IOU, classwise=True, iscrowd="iscrowd",
                                compute_mAP=True)


def evaluation_schema(pred_field: str, eval_key: str) -> dict[str, Any]:
    """The fields FiftyOne's detection evaluation declares for ``eval_key`` (its
    ``DetectionEvaluation.register_samples``): per sample ``<key>_tp`` / ``_fp`` / ``_fn``
    (integers), per label of ``pred_field`` and of the ground truth ``<key>``, ``<key>_id``
    (strings) and ``<key>_iou`` (a number). :func:`build_dataset` declares them with the other
    fields of every run at once, so that registering the evaluation adds nothing."""
    fo = _fiftyone()
    paths = {f"{eval_key}_{suffix}": fo.IntField for suffix in ("tp", "fp", "fn")}
    for label_field in (pred_field, GT_FIELD):
        for suffix, ftype in (("", fo.StringField), ("_id", fo.StringField), ("_iou", fo.FloatField)):
            paths[f"{label_field}.detections.{eval_key}{suffix}"] = ftype
    return {path: _schema_field(path, ftype) for path, ftype in paths.items()}


def _register_evaluation(dataset, part: RunPart):
    """Register the run's evaluation under its key (FiftyOne's run record, the per-sample count
    fields and the per-label fields in the schema, declared already by :func:`build_dataset`)
    before its labels are written."""
    method = _evaluation_config(part).build()
    method.register_run(dataset, part.eval_key)
    method.register_samples(dataset, part.eval_key, dynamic=True)
    return method


def _save_evaluation(dataset, part: RunPart, method, split_matches, tuples, class_names) -> None:
    """The results FiftyOne's evaluation would store (the matches; COCO precision-recall sweep
    for mAP and PR curves), and the count fields in a sidebar group named after the key."""
    from fiftyone.utils.eval.coco import COCODetectionResults

    from workbench.evaluation.matching import COCO_IOUS

    precision, thresholds, recall_sweep = split_matches.precision(range(1, len(class_names) + 1))
    results = COCODetectionResults(
        dataset, method.config, part.eval_key, tuples,
        precision, np.linspace(0, 1, 101), np.asarray(COCO_IOUS), list(class_names),
        recall_sweep=recall_sweep, thresholds=thresholds, backend=method,
    )
    method.save_run_results(dataset, part.eval_key, results)
    method.add_fields_to_sidebar_group(dataset, part.eval_key, omit_fields=(part.kept_field, GT_FIELD))


def match_tuples(gt_docs: list[dict], pred_docs: list[dict], eval_key: str) -> list[tuple]:
    """One image's ``(gt label, pred label, iou, confidence, gt id, pred id)`` per matched or
    unmatched detection and per missed ground-truth box (``None`` where there is none), from
    documents :func:`mark_matches` marked: the matches FiftyOne's results object keeps."""
    id_key, iou_key = f"{eval_key}_id", f"{eval_key}_iou"
    label_of = {str(g["_id"]): g["label"] for g in gt_docs}
    tuples = []
    for p in pred_docs:
        gid = p[id_key]
        tuples.append((label_of[gid], p["label"], p[iou_key], p.get("confidence"), gid, str(p["_id"])) if gid
                      else (None, p["label"], None, p.get("confidence"), None, str(p["_id"])))
    tuples.extend((g["label"], None, None, None, str(g["_id"]), None) for g in gt_docs if not g[id_key])
    return tuples


def _uncertainty_paths(part: RunPart) -> list[str]:
    """``<field>.detections.<attribute>`` (unprefixed) of the detections' attributes the method
    declares as uncertainties (``RecordView.uncertainty``); a list-valued one by its mean."""
    kept = part.plan.kept
    if kept is None:
        return []
    paths = []
    for view in part.plan.attributes_of(kept.record):
        if not view.uncertainty:
            continue
        sample = part.traces[0].get(kept.record) if len(part.traces) else None
        value = None if sample is None else sample.get(view.value_field)
        name = f"{view.field}_mean" if value is not None and value.dim() == 2 else view.field
        paths.append(f"{kept.field}.detections.{name}")
    return paths


def _remove_run(dataset, part: RunPart) -> None:
    """Delete the fields and the evaluation a previous export of ``part`` wrote."""
    previous = dict(dataset.info.get("runs", {})).get(part.name, {})
    key = previous.get("eval_key") or part.eval_key
    if key in dataset.list_evaluations():
        dataset.delete_evaluation(key)
    schema = dataset.get_field_schema()
    dataset.delete_sample_fields([name for name in previous.get("fields", []) if name in schema])


# --------------------------------------------------------------------------------------------
# saved views: the usual questions across runs

#: The share of detections the "high uncertainty" views show (the top 10 % of a run's values).
UNCERTAIN_QUANTILE = 0.9


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"


def compared_pairs(runs: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The ordered pairs of runs (names of ``runs``, a dataset's ``info["runs"]``) that get a
    pairwise saved view. Runs of one ``(method, preset)`` are one setting over seeds, the groups
    of the comparison notebook and the report (:mod:`workbench.evaluation.grouping`); the
    question "what did B find that A missed" is asked between settings, each represented by its
    first run, so that a comparison of many methods over seeds saves a view per ordered pair of
    settings (12 methods over 3 seeds: 132 views, not 1,260, each of which FiftyOne saves into
    the dataset's document one at a time). When every run is of one setting (seeds, or variants
    of one method's config), every ordered pair of runs. Runs exported before the preset was
    recorded group by method alone."""
    settings: dict[tuple[Any, Any], str] = {}
    for name, run in runs.items():
        settings.setdefault((run.get("method"), run.get("preset")), name)
    chosen = list(settings.values()) if len(settings) > 1 else list(runs)
    return [(a, b) for a in chosen for b in chosen if a != b]


def saved_view_specs(runs: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, list[tuple[str, str, Any]]]]:
    """``(name, description, filters)`` of the saved views for the runs of a dataset's
    ``info["runs"]`` (run name -> ``prefix``, ``eval_key``, ``fields``, ``uncertainty``);
    ``filters`` are ``(label field, kind, argument)`` applied in order (see :func:`save_views`).

    - ``<A>-fp-<B>-right``, per ordered pair of :func:`compared_pairs`: samples where run A
      has false positives and B found a ground-truth box A missed; shows A's false positives,
      those boxes, and B's true positives;
    - ``missed-by-all``: ground-truth boxes every evaluated run missed;
    - ``<A>-uncertain``, per run with an uncertainty attribute on its detections: the
      detections above its 90th percentile."""
    evaluated = {n: r for n, r in runs.items() if r.get("eval_key")}
    specs = []
    for a, b in compared_pairs(evaluated):
        ka, kb = evaluated[a]["eval_key"], evaluated[b]["eval_key"]
        pa, pb = evaluated[a]["predictions"], evaluated[b]["predictions"]
        filters = [(pa, "eq", (ka, "fp")), (GT_FIELD, "fn_tp", (ka, kb)), (pb, "eq", (kb, "tp"))]
        specs.append((f"{_slug(a)}-fp-{_slug(b)}-right",
                      f"{a}'s false positives on images where {b} found a box {a} missed", filters))
    if evaluated:
        keys = [r["eval_key"] for r in evaluated.values()]
        specs.append(("missed-by-all", "ground-truth boxes every run missed: " + ", ".join(evaluated),
                      [(GT_FIELD, "all_fn", keys)]))
    for a, ra in runs.items():
        for path in ra.get("uncertainty") or []:
            field_name, attribute = path.split(".detections.")
            specs.append((f"{_slug(a)}-uncertain" if len(ra["uncertainty"]) == 1 else f"{_slug(a)}-uncertain-{_slug(attribute)}",
                          f"{a}'s detections with the highest {attribute} (top {100 - round(100 * UNCERTAIN_QUANTILE)} %)",
                          [(field_name, "quantile", attribute)]))
    return specs


def save_views(dataset) -> list[str]:
    """(Re)create the saved views of :func:`saved_view_specs` for the runs the dataset holds;
    views saved by an earlier export are replaced. Returns their names."""
    from fiftyone import ViewField as F

    for old in dataset.info.get("saved_views", []):
        if dataset.has_saved_view(old):
            dataset.delete_saved_view(old)
    names = []
    schema = dataset.get_field_schema()
    for name, description, filters in saved_view_specs(dataset.info.get("runs", {})):
        if any(f not in schema for f, _, _ in filters):
            continue
        view = dataset.view()
        for label_field, kind, arg in filters:
            if kind == "eq":
                expr = F(arg[0]) == arg[1]
            elif kind == "fn_tp":
                expr = (F(arg[0]) == "fn") & (F(arg[1]) == "tp")
            elif kind == "all_fn":
                expr = F(arg[0]) == "fn"
                for key in arg[1:]:
                    expr = expr & (F(key) == "fn")
            else:  # "quantile": above the run's quantile of the attribute
                path = f"{label_field}.detections.{arg}"
                values = [v for v in dataset.values(path, unwind=True) if v is not None]
                if not values:
                    break
                expr = F(arg) >= float(np.quantile(values, UNCERTAIN_QUANTILE))
            view = view.filter_labels(label_field, expr)
        else:
            dataset.save_view(name, view, description=description, overwrite=True)
            names.append(name)
    info = dict(dataset.info)
    info["saved_views"] = names
    dataset.info = info
    dataset.save()
    return names


# --------------------------------------------------------------------------------------------
# runs into one dataset


class _AlignedTraces(Sequence):
    """The traces of a :class:`~workbench.inspection.TraceSet` in a given image order (lazy)."""

    def __init__(self, traces, image_ids: Sequence[int]) -> None:
        self.traces, self.image_ids = traces, list(image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.traces.by_image_id(self.image_ids[index])


def run_names(run_dirs: Sequence[Path | str]) -> list[str]:
    """A field-safe name per run: its directory's name, with its parent's where two clash."""
    paths = [Path(r).resolve() for r in run_dirs]
    names = [p.name for p in paths]
    names = [f"{p.parent.name}_{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
    names = [re.sub(r"\W", "_", n) for n in names]
    if len(set(names)) != len(names):
        raise WorkbenchError(f"the runs {', '.join(map(str, paths))} do not have distinct directory names")
    return names


def run_setting(run_dir: Path) -> dict[str, Any]:
    """``preset`` and ``seed`` of a run's ``config.json`` (``None`` where it records none, or
    for a folder of traces without one), kept in the dataset's run info: :func:`compared_pairs`
    groups the runs by method and preset."""
    from workbench.engine.run_dir import RunDir

    run = RunDir(Path(run_dir))
    config = run.read_config() if run.config.exists() else {}
    return {"preset": config.get("preset"), "seed": config.get("seed")}


def export_runs(
    run_dirs: Sequence[Path | str],
    *,
    split: str | None = None,
    name: str | None = None,
    max_proposals: int | None = DEFAULT_MAX_PROPOSALS,
    evaluate: bool = True,
    progress: bool = False,
    device: str = "auto",
):
    """``workbench export fiftyone --run A --run B``: one dataset of the runs' traces of
    ``split`` (default: each run's validation split): the samples and ``ground_truth`` once,
    and per run (named by its directory, :func:`run_names`) its views' fields prefixed
    ``<run>_`` and its evaluation under the key ``<run>_eval`` (fields ``<run>_eval_tp``...;
    per label ``<run>_eval``, ``<run>_eval_id``, ``<run>_eval_iou``). Runs of different splits or
    datasets are refused. A dataset of that name (default ``workbench-<A>-<B>-<split>``) that
    holds the same images keeps its other runs: only the given runs' fields are replaced. Saved
    views answer the usual questions (:func:`saved_view_specs`). Returns ``(fiftyone.Dataset,
    ExportSummary)``."""
    from workbench.data.sources import open_dataset

    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise WorkbenchError("give at least one run")
    names = run_names(runs)
    loaded = []
    for run in runs:
        run_split, traces, spec = _run_traces(run, split, device=device, progress=progress)
        loaded.append((run, run_split, traces, spec, traces.meta.get("image_dir")))
    identities = [(s, _data_identity(spec), _data_identity(image_dir)) for _, s, _, spec, image_dir in loaded]
    if len(set(identities)) > 1:
        described = "; ".join(f"{n}: split {s!r} of {spec}" for n, (_, s, _, spec, _) in zip(names, loaded))
        raise WorkbenchError(f"one dataset holds runs of one split of one dataset, and these differ ({described}): "
                             f"export them separately")
    _, run_split, first, spec, image_dir = loaded[0]
    image_ids = list(first.image_ids)
    for n, (_, _, traces, _, _) in zip(names, loaded):
        if sorted(traces.image_ids) != sorted(image_ids):
            raise WorkbenchError(f"the traces of run {n!r} are not of the same images as those of run {names[0]!r}: "
                                 f"predict both with traces on the whole split")
    data = open_dataset(spec, run_split, image_dir=image_dir, progress=progress)
    name = name or "workbench-" + "-".join(names) + f"-{run_split}"
    parts = []
    for n, (run, _, traces, _, _) in zip(names, loaded):
        parts.append(RunPart(
            n, _AlignedTraces(traces, image_ids), ExportPlan.of(record_views(traces.method)), prefix=f"{n}_",
            eval_key=f"{n}_{EVAL_KEY}", maps_dir=run / "fiftyone" / name,
            info={"run": str(run.resolve()), "method": traces.method, "trace_format_version": traces.version,
                  **run_setting(run)},
        ))
    info = {"split": run_split, "data": str(identities[0][1])}
    return build_dataset(data, name, parts, update=True, info=info, max_proposals=max_proposals,
                         evaluate=evaluate, progress=progress)


def export_fiftyone(run_dirs: Sequence[Path | str], *, name: str | None = None, **kwargs):
    """``workbench export fiftyone``: one run into a dataset of its own (:func:`export_run`,
    unprefixed fields), unless ``name`` is a dataset of several runs, which the run joins or
    replaces its part of; several runs into one dataset (:func:`export_runs`)."""
    if len(run_dirs) == 1 and not (name and _holds_prefixed_runs(name)):
        return export_run(run_dirs[0], name=name, **kwargs)
    return export_runs(run_dirs, name=name, **kwargs)


def _holds_prefixed_runs(name: str) -> bool:
    fo = _fiftyone()
    if name not in fo.list_datasets():
        return False
    runs = fo.load_dataset(name).info.get("runs", {})
    return any(r.get("prefix") for r in runs.values())


def _data_identity(spec) -> str | None:
    if spec is None:
        return None
    path = Path(str(spec))
    return str(path.resolve()) if path.exists() else str(spec)


def evaluate_dataset(dataset, class_names: Sequence[str], *, progress: bool = False, pred_field: str = "predictions",
                     eval_key: str = EVAL_KEY):
    """FiftyOne's own COCO-style ``evaluate_detections`` of ``pred_field`` against
    ``ground_truth`` under ``eval_key`` (crowd boxes ignored, mAP computed); returns FiftyOne's
    results object. The export does not call it (it writes the same fields from pycocotools'
    matching, :func:`build_dataset`); it is the reference the tests compare with.

    FiftyOne saves every evaluated sample through its document layer, whose cost grows faster
    than linearly with the boxes per sample (see ``docs/benchmarks.md``)."""
    return dataset.evaluate_detections(
        pred_field, gt_field=GT_FIELD, eval_key=eval_key, method="coco", iou=EVAL_IOU,
        compute_mAP=True, iscrowd="iscrowd", classes=list(class_names), progress=progress,
    )


def _dataset_index(data, image_id: int) -> int:
    try:
        return data.index_of(int(image_id))
    except KeyError:
        raise WorkbenchError(f"image id {image_id} of the traces is not in the dataset {data.source}") from None


def _write_heatmaps(dataset, ids, chunk, heatmaps: Sequence[RecordView], ranges: Mapping[str, HeatmapRange],
                    part: RunPart) -> None:
    fo = _fiftyone()
    for view in heatmaps:
        value_range = ranges[view.field]
        values = {}
        for sid, trace in zip(ids, chunk):
            pixels = heatmap_pixels(trace, view)
            if pixels is None:
                continue
            path = Path(part.maps_dir) / part.field(view.field) / f"{trace.image_id}.png"
            write_heatmap_png(pixels, value_range, path)
            values[sid] = fo.Heatmap(map_path=str(path.resolve()), range=[0, 255],
                                     value_range=[value_range.low, value_range.high], value=view.title)
        if values:
            dataset.set_values(part.field(view.field), values, key_field="id")


def _run_traces(run_dir: Path, split: str | None, *, device: str, progress: bool):
    """``(split, traces, dataset spec)`` of a run: ``split`` defaults to the run's validation
    split; traces that do not exist yet are predicted first (best checkpoint)."""
    from workbench.engine.trainer import load_run_config
    from workbench.inspection.traces import load_traces, trace_dir

    split = split or load_run_config(run_dir).data.val_split
    if not (trace_dir(run_dir, split) / "manifest.json").is_file():
        from workbench.engine.predict import predict_run

        log.info("no traces of split %s in %s: predicting with traces first", split, run_dir)
        predict_run(run_dir, split=split, device=device, progress=progress, trace=True)
    traces = load_traces(run_dir, split)
    return split, traces, traces.meta.get("data") or load_run_config(run_dir).data.spec


def export_run(
    run_dir: Path | str,
    *,
    split: str | None = None,
    name: str | None = None,
    views: Sequence[RecordView] | None = None,
    max_proposals: int | None = DEFAULT_MAX_PROPOSALS,
    evaluate: bool = True,
    progress: bool = False,
    device: str = "auto",
):
    """``workbench export fiftyone``: export the traces of ``split`` (default: the run's
    validation split) of a run as the FiftyOne dataset ``name`` (default
    :func:`default_dataset_name`), replacing a dataset of that name, showing ``views`` (default:
    those the run's method declares). Traces that do not exist yet are predicted first (best
    checkpoint). Returns ``(fiftyone.Dataset, ExportSummary)``."""
    from workbench.data.sources import open_dataset

    run_dir = Path(run_dir)
    split, traces, spec = _run_traces(run_dir, split, device=device, progress=progress)
    data = open_dataset(spec, split, image_dir=traces.meta.get("image_dir"), progress=progress)
    name = name or default_dataset_name(run_dir, split)
    info = {"run": str(run_dir.resolve()), "method": traces.method, "split": split,
            "trace_format_version": traces.version}
    return export_traces(traces, data, name, views=views, maps_dir=run_dir / "fiftyone" / name,
                         max_proposals=max_proposals, evaluate=evaluate, info=info, progress=progress)


__all__ = [
    "DEFAULT_MAX_PROPOSALS",
    "EVAL_KEY",
    "ExportPlan",
    "ExportSummary",
    "box_documents",
    "default_dataset_name",
    "evaluate_dataset",
    "export_fiftyone",
    "export_run",
    "export_runs",
    "export_traces",
    "build_dataset",
    "save_views",
    "relative_xywh",
]
