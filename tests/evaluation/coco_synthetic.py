"""Synthetic COCO ground truth and predictions for the evaluation tests.

Six 640x480 images, three categories with non-contiguous ids (1, 2, 5), boxes in all three
COCO area ranges, crowd boxes, an image without objects and an image without predictions.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

CATEGORY_IDS = (1, 2, 5)
SIDES = {"small": (8, 30), "medium": (34, 90), "large": (100, 260)}


def make_gt(seed: int = 0) -> dict:
    """A COCO ground-truth dict with objects of every area range and a few crowd boxes."""
    rng = np.random.default_rng(seed)
    images = [
        {"id": 10 + i, "width": 640, "height": 480, "file_name": f"{i}.png"} for i in range(6)
    ]
    annotations = []
    for image in images[:-1]:  # the last image has no objects
        for low, high in SIDES.values():
            for _ in range(int(rng.integers(1, 3))):
                w, h = rng.uniform(low, high, size=2)
                x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image["id"],
                        "category_id": int(rng.choice(CATEGORY_IDS)),
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "area": float(w * h),
                        "iscrowd": 0,
                    }
                )
    for image_id in (10, 12):
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": CATEGORY_IDS[0],
                "bbox": [300.0, 200.0, 200.0, 150.0],
                "area": 30000.0,
                "iscrowd": 1,
            }
        )
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def make_predictions(gt: dict, seed: int = 0) -> list[dict]:
    """Jittered copies of the ground truth, duplicates, wrong classes and random boxes."""
    rng = np.random.default_rng(seed + 100)
    predictions = []
    skip_image = gt["images"][1]["id"]  # an image with objects but no predictions
    for ann in gt["annotations"]:
        if ann["image_id"] == skip_image or rng.random() < 0.15:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(int(rng.integers(1, 3))):
            jitter = rng.normal(0, 0.12, size=4) * [w, h, w, h]
            category = ann["category_id"] if rng.random() < 0.85 else int(rng.choice(CATEGORY_IDS))
            predictions.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": category,
                    "bbox": [
                        float(x + jitter[0]),
                        float(y + jitter[1]),
                        float(max(w + jitter[2], 1.0)),
                        float(max(h + jitter[3], 1.0)),
                    ],
                    "score": float(rng.uniform(0.05, 1.0)),
                }
            )
    for image in gt["images"]:
        if image["id"] == skip_image:
            continue
        for _ in range(3):
            w, h = rng.uniform(10, 200, size=2)
            predictions.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": [
                        float(rng.uniform(0, 400)),
                        float(rng.uniform(0, 300)),
                        float(w),
                        float(h),
                    ],
                    "score": float(rng.uniform(0.0, 0.6)),
                }
            )
    return predictions


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def pycocotools_stats(gt_file: Path, pred_file: Path) -> np.ndarray:
    """The twelve stats of pycocotools run directly on the two files."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        coco_dt = coco_gt.loadRes(str(pred_file))
        cocoeval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return cocoeval.stats
