"""Small datasets written into temporary folders: a COCO file, a VOC root, images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workbench.data.shapes import ShapesConfig

# About 200 images: enough to measure the shapes dataset's properties, quick to generate.
PROPERTY_CONFIG = ShapesConfig(num_train=160, num_val=40, image_size=128, seed=3)


def write_png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A random RGB PNG of ``width`` x ``height``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_dict() -> dict:
    """Three images (the third without objects), two categories with non-contiguous ids (3, 7).

    Annotation 12 lies partly outside image 1 (clipped), 13 has a negative width (dropped),
    14 is a crowd box, 15 lies entirely outside image 2 (dropped).
    """
    return {
        "info": {"description": "tiny"},
        "categories": [{"id": 7, "name": "dog", "supercategory": "animal"}, {"id": 3, "name": "cat"}],
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 32, "height": 32},
            {"id": 5, "file_name": "c.png", "width": 20, "height": 24},
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [30, 20, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 7, "bbox": [5, 5, -3, 4], "area": 12, "iscrowd": 0},
            {"id": 14, "image_id": 2, "category_id": 7, "bbox": [0.5, 1.5, 8.25, 6.0], "area": 49.5, "iscrowd": 1},
            {"id": 15, "image_id": 2, "category_id": 3, "bbox": [40, 40, 5, 5], "area": 25},
        ],
    }


def write_coco(
    folder: Path, data: dict | None = None, json_name: str = "ann.json", image_folder: str = "images"
) -> Path:
    """Write ``data`` (default ``coco_dict()``) to ``folder/json_name`` and its images (with
    the sizes the file gives) to ``folder/image_folder``. Returns the JSON path."""
    data = coco_dict() if data is None else data
    images = data.get("images", [])
    for k, img in enumerate(images if isinstance(images, list) else []):
        if {"file_name", "width", "height"} <= set(img) and min(img["width"], img["height"]) > 0:
            write_png(folder / image_folder / img["file_name"], img["width"], img["height"], seed=k)
    return write_json(folder / json_name, data)


def write_coco_root(root: Path, splits=("train", "val")) -> Path:
    """A COCO root: ``annotations/instances_<split>.json`` and ``<split>/`` for each split."""
    for split in splits:
        data = coco_dict()
        write_coco(root, data, json_name=f"annotations/instances_{split}.json", image_folder=split)
    return root


VOC_OBJECT = """
  <object>
    <name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{difficult}</difficult>
    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>
  </object>"""


def voc_xml(name: str, width: int, height: int, objects: list[tuple]) -> str:
    """A VOC annotation; ``objects`` are ``(class, xmin, ymin, xmax, ymax, difficult)`` (1-based)."""
    body = "".join(
        VOC_OBJECT.format(name=c, x0=x0, y0=y0, x1=x1, y1=y1, difficult=int(d)) for c, x0, y0, x1, y1, d in objects
    )
    return (
        f"<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{body}\n</annotation>\n"
    )


VOC_IMAGES = {
    "000005": (48, 40, [("chair", 3, 4, 20, 30, False), ("person", 10, 1, 48, 40, True)]),
    "000007": (36, 36, [("car", 1, 1, 36, 36, False), ("car", 30, 30, 60, 60, False)]),
    "000009": (30, 20, []),
}


def write_voc(root: Path, images: dict = VOC_IMAGES, splits: dict | None = None) -> Path:
    """A VOC root with ``images`` (name -> (width, height, objects)); ``splits`` maps a split
    name to image names (default: ``trainval`` and ``test`` sharing all images)."""
    splits = splits or {"trainval": list(images), "test": list(images)[:1]}
    for k, (name, (w, h, objects)) in enumerate(images.items()):
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(name, w, h, objects))
        path = root / "JPEGImages" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(k)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, quality=95)
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for split, names in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (main / "car_trainval.txt").write_text("000005 -1\n000007  1\n")
    return root


def assert_centre_rule(original, cropped, x0: int, y0: int) -> tuple[int, int]:
    """Assert that ``cropped``, the crop of the sample ``original`` starting at ``(x0, y0)``,
    kept exactly the boxes whose centre lies inside it (with their labels), shifted by the
    offset and clipped to the crop; -> (boxes kept, boxes dropped)."""
    ch, cw = cropped.size
    centres = (original.boxes[:, :2] + original.boxes[:, 2:]) / 2
    inside = (centres[:, 0] > x0) & (centres[:, 0] < x0 + cw) & (centres[:, 1] > y0) & (centres[:, 1] < y0 + ch)
    assert cropped.labels.tolist() == original.labels[inside].tolist()
    expected = original.boxes[inside] - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    expected = torch.minimum(expected.clamp(min=0), torch.tensor([cw, ch, cw, ch], dtype=torch.float32))
    assert torch.allclose(cropped.boxes, expected)
    return int(inside.sum()), int((~inside).sum())
