"""Detections to COCO results entries: the one place absolute ``xyxy`` becomes COCO ``xywh``.

A COCO results entry is ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h],
"score": float}`` with ``(x, y)`` the top-left corner in pixels. Inside the workbench boxes are
absolute ``xyxy``; this module converts them for pycocotools and for results files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from workbench.evaluation._arrays import as_boxes, as_vector, field


def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """``(N, 4)`` absolute ``x1, y1, x2, y2`` -> ``(N, 4)`` COCO ``x, y, width, height``."""
    boxes = as_boxes(boxes, "boxes")
    out = boxes.copy()
    out[:, 2] = boxes[:, 2] - boxes[:, 0]
    out[:, 3] = boxes[:, 3] - boxes[:, 1]
    return out


def _plain_id(value: Any) -> int:
    """A Python ``int`` from an int, a NumPy integer or a 0-d integer tensor."""
    if hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise ValueError(f"ids must be integers, got {value!r}")
    return int(value)


def boxes_to_coco_results(
    image_id: int, boxes: Any, scores: Any, category_ids: Iterable[int]
) -> list[dict]:
    """COCO results entries of one image from ``xyxy`` boxes, scores and category ids."""
    xywh = xyxy_to_xywh(boxes)
    scores = as_vector(scores, len(xywh), "scores")
    category_ids = [_plain_id(c) for c in category_ids]
    if len(category_ids) != len(xywh):
        raise ValueError(f"{len(category_ids)} category ids for {len(xywh)} boxes")
    image_id = _plain_id(image_id)
    return [
        {
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [float(v) for v in box],
            "score": float(score),
        }
        for box, score, category_id in zip(xywh, scores, category_ids, strict=True)
    ]


def detections_to_coco_results(
    image_ids: Sequence[int],
    detections_per_image: Sequence[Any],
    label_to_category_id: Mapping[int, int],
) -> list[dict]:
    """COCO results entries of many images, in image order then detection order.

    ``detections_per_image[i]`` belongs to ``image_ids[i]`` and is a ``Detections`` (or a
    mapping with ``boxes`` ``(N, 4)`` absolute ``xyxy``, ``scores`` ``(N,)``, ``labels``
    ``(N,)``). ``label_to_category_id`` maps the workbench's contiguous labels ``1..C`` to the
    dataset's COCO category ids; a label it does not know raises ``ValueError``.
    """
    if len(image_ids) != len(detections_per_image):
        raise ValueError(
            f"{len(image_ids)} image ids for {len(detections_per_image)} detection sets"
        )
    results: list[dict] = []
    for image_id, detections in zip(image_ids, detections_per_image, strict=True):
        boxes = as_boxes(field(detections, "boxes"), "boxes")
        labels = as_vector(field(detections, "labels"), len(boxes), "labels", dtype=np.int64)
        unknown = sorted({int(label) for label in labels} - set(label_to_category_id))
        if unknown:
            raise ValueError(f"labels {unknown} have no COCO category id in label_to_category_id")
        category_ids = [label_to_category_id[int(label)] for label in labels]
        results.extend(
            boxes_to_coco_results(image_id, boxes, field(detections, "scores"), category_ids)
        )
    return results
