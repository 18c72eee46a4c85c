"""COCO-format detection datasets: a JSON annotation file and a folder of images.

This is one of the two places where COCO's ``[x, y, w, h]`` boxes exist (``evaluation`` is the
other): ``parse_coco`` turns them into absolute ``xyxy`` and nothing after it sees ``xywh``.

Validation (each problem is one ``DatasetError`` naming the file and the image or annotation):
unreadable or malformed JSON; a top level that is not an object; missing ``images``,
``annotations`` or ``categories``; an entry without a required key (``id``, ``file_name``,
``width``, ``height`` for images; ``id``, ``name`` for categories; ``id``, ``image_id``,
``category_id``, ``bbox`` for annotations) or with a value of the wrong type; duplicate
image, category or annotation ids; an annotation whose image or category does not exist.
Boxes partly outside their image are clipped and boxes without area are dropped; both are
counted in the dataset's ``summary``. ``iscrowd: 1`` boxes are kept with ``ignore = True``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from workbench.data.dataset import (
    AnnotationSummary,
    DetectionDataset,
    ImageRecord,
    Transform,
    clip_boxes,
    summarize,
    xywh_to_xyxy,
)
from workbench.errors import DatasetError

IMAGE_KEYS = ("id", "file_name", "width", "height")
CATEGORY_KEYS = ("id", "name")
ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")


def read_json(path: Path) -> object:
    """Parse a JSON file, or raise a ``DatasetError`` saying why it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError("annotation file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the annotation file ({exc})", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path=path) from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entries(data: dict, key: str, path: Path) -> list:
    if key not in data:
        raise DatasetError(f"missing the top-level key '{key}'", path=path)
    entries = data[key]
    if not isinstance(entries, list):
        raise DatasetError(f"'{key}' must be a list, not {type(entries).__name__}", path=path)
    return entries


def _check_entry(entry, index: int, section: str, keys: tuple[str, ...], path: Path, **ids) -> None:
    """Raise if ``entry`` (item ``index`` of ``section``) is not an object with all ``keys``."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{section}[{index}] must be an object", path=path)
    if "id" not in entry:
        raise DatasetError(f"{section}[{index}] has no 'id'", path=path)
    if not _is_int(entry["id"]):
        raise DatasetError(f"{section}[{index}] has a non-integer id {entry['id']!r}", path=path)
    for key in keys:
        if key not in entry:
            raise DatasetError(f"{section} entry lacks the key '{key}'", path=path, **ids)


def parse_categories(entries: list, path: Path) -> list[dict]:
    """Validated categories ``[{"id", "name", ...}]`` sorted by id."""
    seen = set()
    out = []
    for i, cat in enumerate(entries):
        _check_entry(cat, i, "categories", CATEGORY_KEYS, path)
        if cat["id"] in seen:
            raise DatasetError(f"duplicate category id {cat['id']}", path=path)
        seen.add(cat["id"])
        keep = {"id": cat["id"], "name": str(cat["name"])}
        if "supercategory" in cat:
            keep["supercategory"] = cat["supercategory"]
        out.append(keep)
    if not out:
        raise DatasetError("'categories' is empty", path=path)
    return sorted(out, key=lambda c: c["id"])


def parse_images(entries: list, path: Path) -> dict[int, dict]:
    """Validated images by id, in file order."""
    images: dict[int, dict] = {}
    for i, img in enumerate(entries):
        ids = {"image_id": img.get("id")} if isinstance(img, dict) else {}
        _check_entry(img, i, "images", IMAGE_KEYS, path, **ids)
        if img["id"] in images:
            raise DatasetError("duplicate image id", path=path, image_id=img["id"])
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DatasetError("'file_name' must be a non-empty string", path=path, image_id=img["id"])
        for key in ("width", "height"):
            if not _is_number(img[key]) or img[key] <= 0 or int(img[key]) != img[key]:
                message = f"'{key}' must be a positive integer, got {img[key]!r}"
                raise DatasetError(message, path=path, image_id=img["id"])
        images[img["id"]] = img
    return images


def _parse_annotation(ann, index: int, images: dict, category_ids: set, ann_ids: set, path: Path) -> tuple:
    """Validate one annotation; returns ``(image_id, category_id, bbox xywh, area, iscrowd)``."""
    ids = {"annotation_id": ann.get("id")} if isinstance(ann, dict) else {}
    _check_entry(ann, index, "annotations", ANNOTATION_KEYS, path, **ids)
    aid = ann["id"]
    if aid in ann_ids:
        raise DatasetError("duplicate annotation id", path=path, annotation_id=aid)
    ann_ids.add(aid)
    for key in ("image_id", "category_id"):
        if not _is_int(ann[key]):
            raise DatasetError(f"'{key}' must be an integer, got {ann[key]!r}", path=path, annotation_id=aid)
    if ann["image_id"] not in images:
        raise DatasetError(
            "refers to an image id that is not in 'images'", path=path, image_id=ann["image_id"], annotation_id=aid
        )
    if ann["category_id"] not in category_ids:
        raise DatasetError(f"unknown category id {ann['category_id']!r}", path=path, annotation_id=aid)
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise DatasetError(f"'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}", path=path, annotation_id=aid)
    area = ann.get("area", bbox[2] * bbox[3])
    if not _is_number(area) or not math.isfinite(area):
        area = bbox[2] * bbox[3]
    return ann["image_id"], ann["category_id"], bbox, float(area), bool(ann.get("iscrowd", 0))


def parse_coco(data: object, path: Path) -> tuple[list[dict], list[ImageRecord], AnnotationSummary]:
    """Validate a COCO dict and build its records (xyxy boxes, labels 1..C by category id order).

    Returns ``(categories, records in the file's image order, summary)``.
    """
    if not isinstance(data, dict):
        raise DatasetError("the top level must be a JSON object with images, annotations and categories", path=path)
    cat_entries = _entries(data, "categories", path)
    img_entries = _entries(data, "images", path)
    ann_entries = _entries(data, "annotations", path)
    categories = parse_categories(cat_entries, path)
    images = parse_images(img_entries, path)
    category_to_label = {c["id"]: i + 1 for i, c in enumerate(categories)}

    per_image: dict[int, list[tuple]] = {image_id: [] for image_id in images}
    ann_ids: set = set()
    for i, ann in enumerate(ann_entries):
        image_id, cat_id, bbox, area, crowd = _parse_annotation(ann, i, images, category_to_label.keys(), ann_ids, path)
        per_image[image_id].append((ann["id"], category_to_label[cat_id], bbox, area, crowd))

    records, clipped, dropped = [], 0, 0
    for image_id, img in images.items():
        anns = per_image[image_id]
        xyxy = xywh_to_xyxy(np.array([a[2] for a in anns], dtype=np.float64).reshape(-1, 4))
        boxes, keep, changed = clip_boxes(xyxy, img["width"], img["height"])
        clipped += int(changed.sum())
        dropped += int((~keep).sum())
        records.append(
            ImageRecord(
                image_id=image_id,
                file_name=img["file_name"],
                width=int(img["width"]),
                height=int(img["height"]),
                boxes=boxes[keep],
                labels=np.array([a[1] for a in anns], dtype=np.int64)[keep],
                ignore=np.array([a[4] for a in anns], dtype=bool)[keep],
                annotation_ids=np.array([a[0] for a in anns], dtype=np.int64)[keep],
                areas=np.array([a[3] for a in anns], dtype=np.float64)[keep],
            )
        )
    summary = summarize(records, [c["name"] for c in categories], clipped, dropped)
    return categories, records, summary


class CocoDetection(DetectionDataset):
    """A COCO-format dataset: ``ann_file`` (JSON) and ``image_dir`` (``file_name`` is relative to it).

    Labels are contiguous ``1..C`` in the order of category ids; ``label_to_category_id`` and
    ``category_id_to_label`` convert. Returns ``Sample``s (see ``workbench.data.sample``).
    ``data`` is the already-parsed content of ``ann_file``, to save reading a large file twice.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        transforms: Transform | None = None,
        *,
        data: object | None = None,
    ) -> None:
        ann_file = Path(ann_file)
        categories, records, summary = parse_coco(read_json(ann_file) if data is None else data, ann_file)
        super().__init__(records, categories, Path(image_dir), ann_file, summary, transforms)
