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
- the evaluation ``eval`` (``evaluate_detections``, COCO style, ``compute_mAP=True``) of the
  :data:`~workbench.records.DETECTIONS` view's field: ``eval_tp`` / ``eval_fp`` / ``eval_fn``
  per sample and ``eval`` (``"tp"``, ``"fp"``, ``"fn"``), ``eval_id``, ``eval_iou`` per box.

Each field's and attribute's schema ``description`` is its view's ``label``, and
``dataset.info["fields"]`` maps every field to it, so the App says what each field shows.

Boxes cross here, and only here, from absolute ``xyxy`` pixels to FiftyOne's relative
``[x, y, w, h]`` (:func:`relative_xywh`). Samples are added by file path first, then each field
is written for a chunk of samples with ``set_values`` (raw label documents, schema declared up
front), which keeps 2,000 samples with hundreds of boxes each within seconds.
"""

from __future__ import annotations

import logging
import math
import mimetypes
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
        for view in heatmaps:
            values = heatmap_pixels(trace, view)
            if values is not None:
                ranges.setdefault(view.field, HeatmapRange()).update(values, view.title)
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


def _declare(dataset, path: str, kind: str, declared: set[str], description: str | None = None) -> None:
    """Add the embedded attribute ``path`` of ``kind`` to the schema once."""
    if path in declared:
        return
    fo = _fiftyone()
    if kind.endswith("_list"):
        base = _FIELD_TYPES.get(kind[: -len("_list")])
        if base is None:  # lists of lists: left to FiftyOne's dynamic schema
            declared.add(path)
            return
        dataset.add_sample_field(path, fo.ListField, subfield=getattr(fo, base), description=description)
    else:
        dataset.add_sample_field(path, getattr(fo, _FIELD_TYPES[kind]), description=description)
    declared.add(path)


def _declare_attributes(
    dataset, field_name: str, docs_per_sample: Sequence[list[dict]], declared: set[str],
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Declare every non-standard attribute found in the documents of one label field
    (``descriptions``: attribute name -> what it shows)."""
    standard = {"_id", "_cls", "attributes", "tags", "label", "bounding_box", "confidence"}
    descriptions = descriptions or {}
    for docs in docs_per_sample:
        for doc in docs[:1]:
            for name, value in doc.items():
                path = f"{field_name}.detections.{name}"
                if name in standard or path in declared:
                    continue
                kind = "str" if isinstance(value, str) else attribute_kind([value])
                if kind is not None:
                    description = descriptions.get(name)
                    if description is None and name.endswith("_mean") and name[: -len("_mean")] in descriptions:
                        description = f"mean of: {descriptions[name[: -len('_mean')]]}"
                    _declare(dataset, path, kind, declared, description)


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
    fo = _fiftyone()
    class_names = list(data.class_names)
    if views is None:
        views = record_views(getattr(traces, "method", None))
    plan = ExportPlan.of(views)
    traces = list(traces) if not isinstance(traces, Sequence) else traces
    indices = [_dataset_index(data, t.image_id) for t in traces]
    ranges = heatmap_ranges(traces, plan.heatmaps)
    if ranges and maps_dir is None:
        raise WorkbenchError("the traces hold maps: give a folder for the heatmap images (maps_dir)")
    if maps_dir is not None and Path(maps_dir).exists():
        shutil.rmtree(maps_dir)

    descriptions = plan.descriptions()
    dataset = fo.Dataset(name, persistent=True, overwrite=True)
    filepaths = [str(data.image_path(i).resolve()) for i in indices]
    sample_ids = dataset.add_samples([fo.Sample(filepath=p) for p in filepaths], progress=progress)
    dataset.add_sample_field(GT_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections,
                             description="ground-truth boxes of the dataset")
    for label_field in plan.box_fields():
        dataset.add_sample_field(label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections,
                                 description=descriptions[label_field])
    heatmaps = [v for v in plan.heatmaps if v.field in ranges]
    for view in heatmaps:
        dataset.add_sample_field(view.field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Heatmap,
                                 description=view.title)
    declared: set[str] = set()
    counts = {GT_FIELD: 0, **{f: 0 for f in plan.box_fields()}}
    limit = None if max_proposals is None else int(max_proposals)
    for start in range(0, len(traces), chunk_size):
        stop = min(start + chunk_size, len(traces))
        chunk = [traces[i] for i in range(start, stop)]
        ids = sample_ids[start:stop]
        _write_chunk(dataset, ids, chunk, indices[start:stop], data, class_names, plan, limit, declared, counts)
        _write_heatmaps(dataset, ids, chunk, heatmaps, ranges, maps_dir)
    dataset.default_classes = class_names
    shown = [GT_FIELD] + [v.field for v in (*plan.boxes, *plan.suppressed, *heatmaps) if v.shown]
    dataset.app_config.active_fields = fo.ActiveFields(paths=shown)
    dataset.info = {
        **dict(info or {}), "max_proposals": limit,
        "fields": {GT_FIELD: "ground-truth boxes of the dataset", **{k: v for k, v in descriptions.items()
                                                                     if k in counts or k in ranges}},
        "heatmaps": {k: {"range": [r.low, r.high], "value": r.description} for k, r in ranges.items()},
    }
    dataset.save()
    kept = plan.kept
    evaluated = evaluate and len(dataset) > 0 and kept is not None
    if evaluated:
        evaluate_dataset(dataset, class_names, progress=progress, pred_field=kept.field)
    summary = ExportSummary(name, len(dataset), counts, sorted(ranges), evaluated)
    return dataset, summary


def evaluate_dataset(dataset, class_names: Sequence[str], *, progress: bool = False, pred_field: str = "predictions"):
    """COCO-style evaluation ``eval`` of ``pred_field`` against ``ground_truth`` of a dataset
    or view (crowd boxes ignored, mAP computed); returns FiftyOne's results object.

    FiftyOne saves every evaluated sample through its document layer, whose cost grows faster
    than linearly with the boxes per sample (see ``docs/benchmarks.md``): with 100 predictions
    per image it dominates the export; ``workbench export fiftyone --no-eval`` skips it."""
    return dataset.evaluate_detections(
        pred_field, gt_field=GT_FIELD, eval_key=EVAL_KEY, method="coco", iou=0.5,
        compute_mAP=True, iscrowd="iscrowd", classes=list(class_names), progress=progress,
    )


def _dataset_index(data, image_id: int) -> int:
    try:
        return data.index_of(int(image_id))
    except KeyError:
        raise WorkbenchError(f"image id {image_id} of the traces is not in the dataset {data.source}") from None


def _write_chunk(dataset, ids, chunk, indices, data, class_names, plan: ExportPlan, limit, declared, counts) -> None:
    """Metadata, the ground truth and every box field of one chunk of samples, one
    ``set_values`` per field."""
    metadata = []
    fields: dict[str, list] = {GT_FIELD: [], **{f: [] for f in plan.box_fields()}}
    kept = plan.kept
    for trace, index in zip(chunk, indices):
        record = data.records[index]
        metadata.append(_metadata(data.image_path(index), record.height, record.width))
        fields[GT_FIELD].append(ground_truth_documents(record, class_names))
        for view in plan.boxes:
            max_boxes = view.max_boxes if view.max_boxes is None or limit is None else limit
            fields[view.field].append(box_documents(trace, view, class_names, plan.attributes_of(view.record), max_boxes))
        for view in plan.suppressed:
            if kept is None:
                fields[view.field].append([])
                continue
            kept_ids = [d["_id"] for d in fields[kept.field][-1]]
            fields[view.field].append(suppressed_documents(trace, class_names, kept_ids, view.record, kept.record))
    dataset.set_values("metadata", dict(zip(ids, metadata)), key_field="id")
    for field_name, docs_per_sample in fields.items():
        view = next((v for v in plan.boxes if v.field == field_name), None)
        attribute_views = plan.attributes_of(view.record) if view is not None else ()
        _declare_attributes(dataset, field_name, docs_per_sample, declared, {v.field: v.title for v in attribute_views})
        values = {sid: detections_document(docs) for sid, docs in zip(ids, docs_per_sample)}
        dataset.set_values(field_name, values, key_field="id", validate=False, expand_schema=False)
        counts[field_name] += sum(len(d) for d in docs_per_sample)


def _write_heatmaps(dataset, ids, chunk, heatmaps: Sequence[RecordView], ranges: Mapping[str, HeatmapRange],
                    maps_dir: Path | None) -> None:
    fo = _fiftyone()
    for view in heatmaps:
        value_range = ranges[view.field]
        values = {}
        for sid, trace in zip(ids, chunk):
            pixels = heatmap_pixels(trace, view)
            if pixels is None:
                continue
            path = Path(maps_dir) / view.field / f"{trace.image_id}.png"
            write_heatmap_png(pixels, value_range, path)
            values[sid] = fo.Heatmap(map_path=str(path.resolve()), range=[0, 255],
                                     value_range=[value_range.low, value_range.high], value=view.title)
        if values:
            dataset.set_values(view.field, values, key_field="id")


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
    "export_run",
    "export_traces",
    "relative_xywh",
]
