"""Pascal VOC detection datasets: ``root/Annotations/*.xml``, ``root/JPEGImages/*.jpg`` and
``root/ImageSets/Main/<split>.txt`` (one image name per line).

Conventions:

- VOC pixel coordinates are 1-based and inclusive; boxes become 0-based pixel-edge ``xyxy`` as
  ``[xmin - 1, ymin - 1, xmax, ymax]``, so a box covering one pixel has width 1.
- ``difficult`` objects are kept with ``ignore = True`` (``iscrowd: 1`` in ``to_coco_dict``, so
  the COCO evaluator ignores them, as the VOC protocol does).
- Image ids are the 1-based line numbers of the split file; ``file_name`` is the image file
  name (``JPEGImages/<name>.jpg``, or the XML ``<filename>`` when that file exists instead).
- Labels are ``1..C`` in the order of ``class_names`` (category id = label).

Validation: a missing split file, annotation or unknown class name, malformed XML and missing
or non-numeric box coordinates are ``DatasetError``s naming the file (and the object index).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from workbench.data.dataset import DetectionDataset, ImageRecord, Transform, clip_boxes, summarize
from workbench.errors import DatasetError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class VocAnnotation:
    """One parsed XML file. ``boxes`` (N, 4) float64 0-based ``xyxy``; ``names`` (N,);
    ``difficult`` (N,) bool. ``width``/``height`` are 0 when the file gives no size."""

    filename: str | None
    width: int
    height: int
    names: list[str]
    boxes: np.ndarray
    difficult: np.ndarray


def _text(node: ET.Element, tag: str) -> str | None:
    child = node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _number(node: ET.Element, tag: str, path: Path, where: str) -> float:
    text = _text(node, tag)
    if text is None:
        raise DatasetError(f"{where} has no <{tag}>", path=path)
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{where}: <{tag}> is not a number: {text!r}", path=path) from None


def parse_voc_xml(path: Path) -> VocAnnotation:
    """Read one VOC annotation file (see the module doc for the box convention)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("annotation file not found", path=path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(f"malformed XML ({exc})", path=path) from None
    except OSError as exc:
        raise DatasetError(f"cannot read the annotation file ({exc})", path=path) from None
    if root.tag != "annotation":
        raise DatasetError(f"the root element is <{root.tag}>, expected <annotation>", path=path)
    width = height = 0
    size = root.find("size")
    if size is not None and _text(size, "width") and _text(size, "height"):
        width = int(_number(size, "width", path, "<size>"))
        height = int(_number(size, "height", path, "<size>"))
    names, boxes, difficult = [], [], []
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k}"
        name = _text(obj, "name")
        if not name:
            raise DatasetError(f"{where} has no <name>", path=path)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DatasetError(f"{where} ({name}) has no <bndbox>", path=path)
        x0, y0, x1, y1 = (_number(bnd, t, path, f"{where} ({name})") for t in ("xmin", "ymin", "xmax", "ymax"))
        names.append(name)
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        difficult.append(_text(obj, "difficult") in ("1", "true"))
    return VocAnnotation(
        filename=_text(root, "filename"),
        width=width,
        height=height,
        names=names,
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        difficult=np.array(difficult, dtype=bool),
    )


def read_split(root: Path, split: str) -> list[str]:
    """Image names of ``root/ImageSets/Main/<split>.txt`` (first column of each non-empty line)."""
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"no split file for '{split}'", path=path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the split file ({exc})", path=path) from None
    return [line.split()[0] for line in lines if line.strip()]


def _image_file(image_dir: Path, name: str, xml_filename: str | None) -> str:
    """The image file name of ``name``: ``<name>.jpg``, or the XML's ``<filename>`` if only it exists."""
    default = f"{name}.jpg"
    if not (image_dir / default).is_file() and xml_filename and (image_dir / xml_filename).is_file():
        return xml_filename
    return default


def _header_size(path: Path, image_id: int) -> tuple[int, int]:
    """``(width, height)`` from an image header, for XML files without ``<size>``."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        message = "image file not found (and the annotation gives no <size>)"
        raise DatasetError(message, path=path, image_id=image_id) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read the image ({exc})", path=path, image_id=image_id) from None


class VocDetection(DetectionDataset):
    """A Pascal VOC split (e.g. ``VOCdevkit/VOC2007``, ``split="trainval"``) as ``Sample``s."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Transform | None = None,
        class_names: tuple[str, ...] | list[str] = VOC_CLASSES,
    ) -> None:
        root = Path(root)
        image_dir = root / "JPEGImages"
        label_of = {name: i + 1 for i, name in enumerate(class_names)}
        records, clipped, dropped, next_ann_id = [], 0, 0, 1
        for index, name in enumerate(read_split(root, split)):
            image_id = index + 1
            xml_path = root / "Annotations" / f"{name}.xml"
            ann = parse_voc_xml(xml_path)
            for k, cls in enumerate(ann.names):
                if cls not in label_of:
                    raise DatasetError(
                        f"object {k} has the unknown class '{cls}' (not one of the {len(label_of)} class names)",
                        path=xml_path,
                        image_id=image_id,
                    )
            file_name = _image_file(image_dir, name, ann.filename)
            width, height = ann.width, ann.height
            if width <= 0 or height <= 0:
                width, height = _header_size(image_dir / file_name, image_id)
            boxes, keep, changed = clip_boxes(ann.boxes, width, height)
            clipped += int(changed.sum())
            dropped += int((~keep).sum())
            n = int(keep.sum())
            kept = boxes[keep]
            records.append(
                ImageRecord(
                    image_id=image_id,
                    file_name=file_name,
                    width=width,
                    height=height,
                    boxes=kept,
                    labels=np.array([label_of[c] for c in ann.names], dtype=np.int64)[keep],
                    ignore=ann.difficult[keep],
                    annotation_ids=np.arange(next_ann_id, next_ann_id + n, dtype=np.int64),
                    areas=(kept[:, 2] - kept[:, 0]) * (kept[:, 3] - kept[:, 1]),
                )
            )
            next_ann_id += n
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
        summary = summarize(records, list(class_names), clipped, dropped)
        super().__init__(records, categories, image_dir, root, summary, transforms)
        self.split = split
