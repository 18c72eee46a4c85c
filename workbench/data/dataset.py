"""What COCO and VOC datasets share: image records, box clean-up, image loading, COCO export.

A format module (``coco``, ``voc``) parses its files into ``ImageRecord``s with boxes already in
absolute ``xyxy``, clipped to the image; ``DetectionDataset`` turns a record into a ``Sample``.

Shapes: ``boxes`` (N, 4) float64 ``xyxy`` in records (exact, so that ``to_coco_dict`` writes back
the numbers it read), float32 in samples; ``labels`` (N,) int64 in ``1..C``; ``ignore`` (N,) bool.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from workbench.data.sample import Sample
from workbench.errors import DatasetError

Transform = Callable[[Sample], Sample]

COCO_FLOAT_DIGITS = 4


@dataclass(frozen=True)
class ImageRecord:
    """One image and its cleaned annotations (boxes clipped, empty boxes dropped).

    ``file_name`` is relative to the dataset's image folder. ``annotation_ids`` (N,) are the
    source's ids (COCO) or running numbers (VOC); ``areas`` (N,) the source's areas or box areas.
    """

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    annotation_ids: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class AnnotationSummary:
    """Counts gathered while reading one split.

    ``clipped``: boxes partly outside the image, clipped to it; ``dropped``: boxes with no area
    (negative or zero width or height, entirely outside the image, or not finite), left out;
    ``ignored``: kept boxes flagged ``iscrowd`` (COCO) or ``difficult`` (VOC).
    ``per_class`` counts kept boxes (ignored ones included) by class name.
    """

    images: int = 0
    annotations: int = 0
    empty_images: int = 0
    clipped: int = 0
    dropped: int = 0
    ignored: int = 0
    per_class: dict[str, int] = field(default_factory=dict)


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip ``xyxy`` boxes (N, 4) to ``[0, width] x [0, height]``.

    Returns ``(clipped boxes (N, 4), keep (N,) bool, changed (N,) bool)``. A box is not kept when
    it has no positive width and height before or after clipping, or is not finite; ``changed``
    marks kept boxes that clipping moved.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(1)
    safe = np.where(finite[:, None], boxes, 0.0)
    valid_before = (safe[:, 2] > safe[:, 0]) & (safe[:, 3] > safe[:, 1])
    limits = np.array([width, height, width, height], dtype=np.float64)
    out = np.clip(safe, 0.0, limits)
    valid_after = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    keep = finite & valid_before & valid_after
    changed = keep & (out != safe).any(1)
    return out, keep, changed


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` (N, 4) to ``[x0, y0, x1, y1]`` (N, 4)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[x0, y0, x1, y1]`` (N, 4) to COCO ``[x, y, w, h]`` (N, 4)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def open_image(path: Path, image_id: int | None = None) -> Image.Image:
    """Open and fully decode an image file as RGB, or raise a ``DatasetError`` naming it."""
    if not path.is_file():
        raise DatasetError("image file not found", path=path, image_id=image_id)
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read the image ({exc})", path=path, image_id=image_id) from None


def load_image(path: Path, image_id: int | None = None, expected_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The image at ``path`` as a (3, H, W) uint8 tensor.

    ``expected_size`` is ``(height, width)`` from the annotations; a different size is an error
    (the boxes would not fit the image). EXIF orientation is not applied, as in pycocotools.
    """
    img = open_image(path, image_id)
    if expected_size is not None and (img.height, img.width) != tuple(expected_size):
        h, w = expected_size
        raise DatasetError(
            f"the image is {img.width}x{img.height} pixels but the annotations say {w}x{h}",
            path=path,
            image_id=image_id,
        )
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def summarize(records: list[ImageRecord], class_names: list[str], clipped: int, dropped: int) -> AnnotationSummary:
    """The ``AnnotationSummary`` of cleaned records (clip and drop counts come from parsing)."""
    counts = Counter()
    for rec in records:
        counts.update(rec.labels.tolist())
    return AnnotationSummary(
        images=len(records),
        annotations=sum(len(r) for r in records),
        empty_images=sum(1 for r in records if len(r) == 0),
        clipped=clipped,
        dropped=dropped,
        ignored=int(sum(int(r.ignore.sum()) for r in records)),
        per_class={name: counts.get(i + 1, 0) for i, name in enumerate(class_names)},
    )


class DetectionDataset(torch.utils.data.Dataset):
    """A map-style dataset of ``Sample``s over cleaned ``ImageRecord``s.

    ``categories`` are ``{"id", "name"}`` dicts (plus ``supercategory`` where the source has
    one) sorted by id; label ``k`` (1-based) is ``categories[k - 1]``. ``transforms`` maps a
    ``Sample`` to a ``Sample`` and runs after loading. Images are read when a sample is
    asked for, so a missing image is reported then (or all at once by ``verify_images``).
    """

    def __init__(
        self,
        records: list[ImageRecord],
        categories: list[dict],
        image_dir: Path,
        source: Path,
        summary: AnnotationSummary,
        transforms: Transform | None = None,
    ) -> None:
        self.records = records
        self.categories = categories
        self.image_dir = Path(image_dir)
        self.source = Path(source)
        self.summary = summary
        self.transforms = transforms
        self.label_to_category_id = {i + 1: int(c["id"]) for i, c in enumerate(categories)}
        self.category_id_to_label = {cid: label for label, cid in self.label_to_category_id.items()}
        self.image_ids = [r.image_id for r in records]
        self._index_of_id = {image_id: i for i, image_id in enumerate(self.image_ids)}

    @property
    def class_names(self) -> list[str]:
        """Class names by label: ``class_names[k - 1]`` is the name of label ``k``."""
        return [c["name"] for c in self.categories]

    @property
    def num_classes(self) -> int:
        """Number of object classes ``C`` (background not counted)."""
        return len(self.categories)

    def __len__(self) -> int:
        return len(self.records)

    def index_of(self, image_id: int) -> int:
        """Position of an image id in the dataset."""
        return self._index_of_id[image_id]

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.records[index].file_name

    def load_sample(self, index: int) -> Sample:
        """The sample at ``index`` as stored, without transforms."""
        rec = self.records[index]
        image = load_image(self.image_path(index), rec.image_id, (rec.height, rec.width))
        return Sample.from_arrays(image, rec.boxes, rec.labels, rec.ignore, rec.image_id, rec.file_name)

    def __getitem__(self, index: int) -> Sample:
        sample = self.load_sample(index)
        return self.transforms(sample) if self.transforms is not None else sample

    def verify_images(self, progress: bool = False) -> None:
        """Open and decode every image and check its size; raise on the first bad one."""
        from tqdm.auto import tqdm

        desc = f"checking images of {self.source.name}"
        for index in tqdm(range(len(self)), desc=desc, unit="img", disable=not progress):
            rec = self.records[index]
            path = self.image_path(index)
            img = open_image(path, rec.image_id)
            if (img.height, img.width) != (rec.height, rec.width):
                raise DatasetError(
                    f"the image is {img.width}x{img.height} pixels but the annotations say {rec.width}x{rec.height}",
                    path=path,
                    image_id=rec.image_id,
                )

    def to_coco_dict(self) -> dict:
        """The dataset as a COCO ground-truth dict, as the COCO evaluator reads it.

        Boxes are the cleaned ones (clipped, empty ones dropped); ignore flags become
        ``iscrowd: 1``, which pycocotools treats as regions where detections are neither
        true nor false positives.
        """
        images, annotations = [], []
        for rec in self.records:
            images.append({"id": rec.image_id, "file_name": rec.file_name, "width": rec.width, "height": rec.height})
            xywh = np.round(xyxy_to_xywh(rec.boxes), COCO_FLOAT_DIGITS)
            for k in range(len(rec)):
                annotations.append(
                    {
                        "id": int(rec.annotation_ids[k]),
                        "image_id": rec.image_id,
                        "category_id": self.label_to_category_id[int(rec.labels[k])],
                        "bbox": [float(v) for v in xywh[k]],
                        "area": round(float(rec.areas[k]), COCO_FLOAT_DIGITS),
                        "iscrowd": int(rec.ignore[k]),
                    }
                )
        return {
            "info": {"description": f"converted from {self.source}"},
            "images": images,
            "annotations": annotations,
            "categories": [dict(c) for c in self.categories],
        }
