"""The built-in shapes dataset: determinism, layout, and the properties detection needs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import PROPERTY_CONFIG
from pycocotools.coco import COCO
from torchvision.ops import box_iou

from workbench.cli import main
from workbench.data import shapes
from workbench.data.shapes import (
    CLASS_NAMES,
    ShapesConfig,
    builtin_shapes_root,
    generate_shapes,
    mask_box,
    rasterize,
    shape_outline,
)
from workbench.errors import ConfigError

SMALL = ShapesConfig(num_train=5, num_val=3, image_size=64, seed=11)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = _files(generate_shapes(tmp_path / "a", SMALL, progress=False, workers=0))
    b = _files(generate_shapes(tmp_path / "b", SMALL, progress=False, workers=2))
    assert len(a) == 5 + 3 + 2
    assert a == b


def test_other_seed_gives_other_images(tmp_path):
    a = _files(generate_shapes(tmp_path / "a", SMALL, progress=False, workers=0))
    b = _files(generate_shapes(tmp_path / "b", ShapesConfig(5, 3, 64, seed=12), progress=False, workers=0))
    assert a["train/000000.png"] != b["train/000000.png"]


def test_images_do_not_depend_on_how_many_are_generated(tmp_path):
    few = generate_shapes(tmp_path / "few", ShapesConfig(2, 1, 64, seed=11), progress=False, workers=0)
    many = generate_shapes(tmp_path / "many", SMALL, progress=False, workers=0)
    for name in ("train/000000.png", "train/000001.png", "val/000000.png"):
        assert (few / name).read_bytes() == (many / name).read_bytes()
    few_anns = _load(few, "train")["annotations"]
    many_anns = [a for a in _load(many, "train")["annotations"] if a["image_id"] <= 2]
    assert few_anns == many_anns


def test_coco_layout_and_keys(tmp_path):
    root = generate_shapes(tmp_path, SMALL, progress=False, workers=0)
    for split, n in (("train", 5), ("val", 3)):
        data = _load(root, split)
        assert set(data) >= {"info", "categories", "images", "annotations"}
        assert [c["id"] for c in data["categories"]] == list(range(1, len(CLASS_NAMES) + 1))
        assert all(set(c) == {"id", "name", "supercategory"} for c in data["categories"])
        assert [im["id"] for im in data["images"]] == list(range(1, n + 1))
        for im in data["images"]:
            assert (root / split / im["file_name"]).is_file()
            assert (im["width"], im["height"]) == (64, 64)
        for ann in data["annotations"]:
            assert set(ann) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
            assert 0 < ann["area"] <= w * h
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])


def test_pycocotools_loads_the_generated_json(shapes_root, capsys):
    coco = COCO(str(shapes_root / "annotations" / "instances_val.json"))
    data = _load(shapes_root, "val")
    assert len(coco.getImgIds()) == PROPERTY_CONFIG.num_val
    assert len(coco.getAnnIds()) == len(data["annotations"]) > 0
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(CLASS_NAMES)


def _all_annotations(root: Path) -> tuple[list[dict], list[dict]]:
    images, anns = [], []
    for split in ("train", "val"):
        data = _load(root, split)
        images += [dict(im, split=split) for im in data["images"]]
        anns += [dict(a, split=split) for a in data["annotations"]]
    return images, anns


def test_classes_are_many_and_imbalanced(shapes_root):
    _, anns = _all_annotations(shapes_root)
    counts = Counter(a["category_id"] for a in anns)
    assert len(counts) >= 6
    ordered = [counts[k] for k in range(1, len(CLASS_NAMES) + 1)]
    assert ordered[0] >= 4 * ordered[-1]  # 35% vs 5% by design
    assert ordered[0] == max(ordered)
    assert min(ordered) >= 10


def test_object_sizes_span_small_to_large_and_favour_small(shapes_root):
    _, anns = _all_annotations(shapes_root)
    side = PROPERTY_CONFIG.image_size
    rel = np.array([max(a["bbox"][2], a["bbox"][3]) / side for a in anns])
    assert rel.min() <= 0.07
    assert rel.max() >= 0.45
    assert rel.max() <= 0.65
    assert np.median(rel) < 0.25  # log-uniform over [0.04, 0.6] has its median near 0.15
    assert (rel < 0.15).mean() > (rel > 0.4).mean()


def test_some_objects_overlap_strongly_and_some_images_are_empty(shapes_root):
    images, anns = _all_annotations(shapes_root)
    by_image: dict[tuple, list] = {}
    for a in anns:
        by_image.setdefault((a["split"], a["image_id"]), []).append(a["bbox"])
    strong = 0
    for boxes in by_image.values():
        b = torch.tensor(boxes, dtype=torch.float32)
        b[:, 2:] += b[:, :2]
        iou = box_iou(b, b).triu(diagonal=1)
        strong += int((iou > 0.5).sum())
    assert strong >= 5
    empty = sum(1 for im in images if (im["split"], im["id"]) not in by_image)
    assert 1 <= empty <= 0.12 * len(images)


def test_images_are_textured_and_colourful(shapes_root):
    from PIL import Image

    stds, means = [], []
    for k in range(20):
        img = np.asarray(Image.open(shapes_root / "train" / f"{k:06d}.png"), dtype=np.float32)
        assert img.shape == (128, 128, 3)
        stds.append(img.std(axis=(0, 1)).mean())
        means.append(img.mean(axis=(0, 1)))
    assert min(stds) > 2.0  # never a flat image: texture and noise everywhere
    assert np.std(np.array(means), axis=0).mean() > 10  # colours vary between images


def test_box_is_the_tight_box_of_the_rasterized_shape():
    rng = np.random.default_rng(0)
    for name in CLASS_NAMES:
        polys = [p * 20 + 40 for p in shape_outline(name, rng)]
        y0, x0, mask = rasterize(polys, 100)
        box = mask_box(y0, x0, mask)
        lo, hi = polys[0].min(0), polys[0].max(0)
        assert box[0] == pytest.approx(lo[0], abs=1.0) and box[1] == pytest.approx(lo[1], abs=1.0)
        assert box[2] == pytest.approx(hi[0] + 1, abs=1.0) and box[3] == pytest.approx(hi[1] + 1, abs=1.0)
        window = np.zeros((100, 100), bool)
        window[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
        ys, xs = np.nonzero(window)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == box


def test_ring_has_a_hole():
    rng = np.random.default_rng(1)
    polys = [p * 30 + 50 for p in shape_outline("ring", rng)]
    _, _, mask = rasterize(polys, 100)
    centre = mask.shape[0] // 2, mask.shape[1] // 2
    assert not mask[centre] and mask.any()


def test_builtin_root_is_generated_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    cfg = ShapesConfig(num_train=3, num_val=2, image_size=48, seed=0)
    root = builtin_shapes_root(cfg, progress=False)
    assert root.parent == tmp_path / "cache"
    assert (root / "annotations" / "instances_val.json").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [root.name]  # no temporary folder left

    def fail(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(shapes, "generate_shapes", fail)
    assert builtin_shapes_root(cfg, progress=False) == root


def test_builtin_root_leaves_nothing_behind_when_generation_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))

    def crash(root, cfg, progress):
        (Path(root) / "partial.txt").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "generate_shapes", crash)
    with pytest.raises(KeyboardInterrupt):
        builtin_shapes_root(ShapesConfig(num_train=1, num_val=1, image_size=48), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_invalid_config_is_a_config_error():
    with pytest.raises(ConfigError, match="image size"):
        ShapesConfig(image_size=8)
    with pytest.raises(ConfigError, match="negative"):
        ShapesConfig(num_train=-1)


def test_cli_writes_the_dataset(tmp_path, capsys):
    rc = main(["data", "shapes", "--out", str(tmp_path / "s"), "--train", "2", "--val", "1", "--size", "48", "-q"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "s" / "train").iterdir()) == ["000000.png", "000001.png"]
    assert _load(tmp_path / "s", "val")["images"][0]["width"] == 48
    assert "wrote the shapes dataset" in capsys.readouterr().out
