"""COCO datasets: what a sample holds, box clean-up, and one clear error per broken input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_builders import coco_dict, write_coco, write_coco_root, write_json, write_png
from pycocotools.coco import COCO

from workbench.data.coco import CocoDetection
from workbench.data.dataset import clip_boxes
from workbench.data.sample import Sample
from workbench.data.sources import open_dataset, shapes_config_from_spec
from workbench.errors import ConfigError, DatasetError


@pytest.fixture
def coco(tmp_path) -> CocoDetection:
    return CocoDetection(write_coco(tmp_path), tmp_path / "images")


def test_sample_structure_and_dtypes(coco):
    s = coco[0]
    assert isinstance(s, Sample)
    assert s.image.dtype == torch.uint8 and s.image.shape == (3, 30, 40)
    assert s.boxes.dtype == torch.float32 and s.boxes.shape == (2, 4)
    assert s.labels.dtype == torch.int64 and s.ignore.dtype == torch.bool
    assert s.image_id == 1 and s.orig_size == (30, 40) and s.file_name == "a.png"


def test_xywh_becomes_xyxy_and_labels_are_contiguous(coco):
    # categories 3 (cat) and 7 (dog) become labels 1 and 2, in id order
    assert coco.categories[0]["id"] == 3 and coco.categories[1]["name"] == "dog"
    assert coco.label_to_category_id == {1: 3, 2: 7}
    assert coco.category_id_to_label == {3: 1, 7: 2}
    s = coco[0]
    assert s.boxes[0].tolist() == [2.0, 3.0, 12.0, 8.0]
    assert s.labels.tolist() == [1, 2]


def test_boxes_are_clipped_and_dropped_and_counted(coco):
    s = coco[0]
    assert s.boxes[1].tolist() == [30.0, 20.0, 40.0, 30.0]  # clipped to the 40 x 30 image
    assert len(coco[1]) == 1  # the box outside image 2 is gone
    summary = coco.summary
    assert (summary.images, summary.annotations, summary.empty_images) == (3, 3, 1)
    assert (summary.clipped, summary.dropped, summary.ignored) == (1, 2, 1)
    assert summary.per_class == {"cat": 1, "dog": 2}


def test_crowd_boxes_are_kept_as_ignore(coco):
    s = coco[coco.index_of(2)]
    assert s.ignore.tolist() == [True]
    assert s.boxes[0].tolist() == pytest.approx([0.5, 1.5, 8.75, 7.5])


def test_image_without_annotations_has_empty_tensors(coco):
    s = coco[2]
    assert s.boxes.shape == (0, 4) and s.labels.shape == (0,) and s.ignore.shape == (0,)
    assert coco.image_ids == [1, 2, 5]


def test_to_coco_dict_round_trips_and_pycocotools_reads_it(coco, tmp_path):
    out = coco.to_coco_dict()
    anns = {a["id"]: a for a in out["annotations"]}
    assert set(anns) == {11, 12, 14}
    assert anns[11]["bbox"] == [2.0, 3.0, 10.0, 5.0] and anns[11]["category_id"] == 3
    assert anns[12]["bbox"] == [30.0, 20.0, 10.0, 10.0]
    assert anns[14]["iscrowd"] == 1 and anns[14]["bbox"] == [0.5, 1.5, 8.25, 6.0]
    gt = COCO(str(write_json(tmp_path / "round.json", out)))
    assert len(gt.getAnnIds()) == 3 and gt.getCatIds() == [3, 7]
    again = CocoDetection(tmp_path / "round.json", tmp_path / "images")
    assert torch.equal(again[0].boxes, coco[0].boxes)


def test_transforms_run_after_loading(tmp_path):
    def scale_labels(sample: Sample) -> Sample:
        return sample.replace(labels=sample.labels * 10)

    ds = CocoDetection(write_coco(tmp_path), tmp_path / "images", transforms=scale_labels)
    assert ds[0].labels.tolist() == [10, 20]


def test_clip_boxes_handles_every_case():
    boxes = np.array([[1, 1, 5, 5], [-2, 3, 4, 12], [5, 5, 2, 8], [20, 20, 30, 30], [0, np.nan, 1, 1]], float)
    out, keep, changed = clip_boxes(boxes, 10, 10)
    assert keep.tolist() == [True, True, False, False, False]
    assert changed.tolist() == [False, True, False, False, False]
    assert out[1].tolist() == [0, 3, 4, 10]


# ----------------------------------------------------------------------------- errors


def _broken(tmp_path, mutate) -> tuple:
    data = coco_dict()
    mutate(data)
    path = write_coco(tmp_path, data)
    return path, tmp_path / "images"


def _error(tmp_path, mutate) -> str:
    path, images = _broken(tmp_path, mutate)
    with pytest.raises(DatasetError) as info:
        CocoDetection(path, images)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found") as info:
        CocoDetection(tmp_path / "nope.json", tmp_path)
    assert info.value.path == tmp_path / "nope.json"


def test_unreadable_annotation_file(tmp_path):
    path = tmp_path / "ann.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError, match="cannot read the annotation file"):
        CocoDetection(path, tmp_path)


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DatasetError, match=r"malformed JSON at line 2, column 12") as info:
        CocoDetection(path, tmp_path)
    assert str(path) in str(info.value)


def test_top_level_must_be_an_object(tmp_path):
    path = write_json(tmp_path / "ann.json", [1, 2, 3])
    with pytest.raises(DatasetError, match="top level must be a JSON object"):
        CocoDetection(path, tmp_path)


def _set_image_2_id_to_2(d):
    d["images"][2]["id"] = 2


#: (the edit of a valid annotation file, the fragments its error message must hold): each error
#: names the item (image or annotation id, or position) and the problem.
BAD_ANNOTATION_FILES = {
    "missing images": (lambda d: d.pop("images"), ["missing the top-level key 'images'"]),
    "missing annotations": (lambda d: d.pop("annotations"), ["missing the top-level key 'annotations'"]),
    "missing categories": (lambda d: d.pop("categories"), ["missing the top-level key 'categories'"]),
    "section not a list": (lambda d: d.update(images={"id": 1}), ["'images' must be a list"]),
    "image without file_name": (lambda d: d["images"][1].pop("file_name"), ["image id 2", "'file_name'"]),
    "image without width": (lambda d: d["images"][1].pop("width"), ["image id 2", "'width'"]),
    "image without height": (lambda d: d["images"][1].pop("height"), ["image id 2", "'height'"]),
    "image without id": (lambda d: d["images"][0].pop("id"), ["images[0] has no 'id'"]),
    "image with bad size": (
        lambda d: d["images"][0].update(width=-4), ["image id 1", "'width' must be a positive integer"]
    ),
    "annotation without image_id": (
        lambda d: d["annotations"][3].pop("image_id"), ["annotation id 14", "'image_id'"]
    ),
    "annotation without category_id": (
        lambda d: d["annotations"][3].pop("category_id"), ["annotation id 14", "'category_id'"]
    ),
    "annotation without bbox": (lambda d: d["annotations"][3].pop("bbox"), ["annotation id 14", "'bbox'"]),
    "category without name": (lambda d: d["categories"][0].pop("name"), ["lacks the key 'name'"]),
    "malformed bbox": (
        lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), ["annotation id 11", "'bbox' must be 4 numbers"]
    ),
    "annotation for unknown image": (
        lambda d: d["annotations"][1].update(image_id=99), ["image id 99", "annotation id 12", "not in 'images'"]
    ),
    "annotation for unknown category": (
        lambda d: d["annotations"][4].update(category_id=4), ["annotation id 15", "unknown category id 4"]
    ),
    "duplicate image ids": (_set_image_2_id_to_2, ["duplicate image id", "image id 2"]),
    "duplicate annotation ids": (
        lambda d: d["annotations"][2].update(id=11), ["duplicate annotation id", "annotation id 11"]
    ),
    "duplicate category ids": (lambda d: d["categories"][1].update(id=7), ["duplicate category id 7"]),
}


@pytest.mark.parametrize("case", list(BAD_ANNOTATION_FILES))
def test_bad_annotation_file_names_the_item_and_the_problem(tmp_path, case):
    edit, fragments = BAD_ANNOTATION_FILES[case]
    message = _error(tmp_path, edit)
    assert all(fragment in message for fragment in fragments), (message, fragments)


def test_missing_image_is_reported_when_loaded(tmp_path):
    ds = CocoDetection(write_coco(tmp_path), tmp_path / "images")
    (tmp_path / "images" / "b.png").unlink()
    ds[0]  # the other images still load
    with pytest.raises(DatasetError, match="image file not found") as info:
        ds[1]
    assert "b.png" in str(info.value) and "image id 2" in str(info.value)


def test_unreadable_image_is_reported_when_loaded(tmp_path):
    ds = CocoDetection(write_coco(tmp_path), tmp_path / "images")
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read the image") as info:
        ds[0]
    assert "a.png" in str(info.value) and "image id 1" in str(info.value)


def test_image_of_another_size_than_annotated(tmp_path):
    ds = CocoDetection(write_coco(tmp_path), tmp_path / "images")
    write_png(tmp_path / "images" / "c.png", 24, 20)
    with pytest.raises(DatasetError, match="24x20 pixels but the annotations say 20x24"):
        ds[2]


# ----------------------------------------------------------------------------- specs


def test_open_coco_root_by_split(tmp_path):
    root = write_coco_root(tmp_path / "root")
    ds = open_dataset(str(root), "val")
    assert isinstance(ds, CocoDetection) and len(ds) == 3
    assert ds.image_dir == root / "val"
    assert ds[0].image.shape == (3, 30, 40)


def test_open_coco_root_missing_split_lists_the_splits(tmp_path):
    root = write_coco_root(tmp_path / "root", splits=("train",))
    with pytest.raises(DatasetError, match=r"no annotations for split 'test' \(splits found: train\)"):
        open_dataset(str(root), "test")


@pytest.mark.parametrize("image_folder", ["train", "labels", "images", "data", "."])
def test_open_coco_json_finds_its_image_folder(tmp_path, image_folder):
    path = write_coco(tmp_path, json_name="labels.json", image_folder=image_folder)
    ds = open_dataset(str(path), "train")
    assert ds.image_dir == (tmp_path / image_folder if image_folder != "." else tmp_path)
    assert ds[0].image.shape == (3, 30, 40)


def test_open_coco_json_inside_a_coco_root(tmp_path):
    root = write_coco_root(tmp_path / "root", splits=("val",))
    ds = open_dataset(str(root / "annotations" / "instances_val.json"), "whatever")
    assert ds.image_dir == root / "val"


def test_open_coco_json_with_explicit_image_folder(tmp_path):
    path = write_coco(tmp_path, image_folder="somewhere/else")
    ds = open_dataset(str(path), "train", image_dir=tmp_path / "somewhere" / "else")
    assert ds[1].image.shape == (3, 32, 32)


def test_open_coco_json_without_findable_images(tmp_path):
    path = write_json(tmp_path / "ann.json", coco_dict())
    with pytest.raises(DatasetError, match=r"cannot find the images: looked for 'a.png'.*--images"):
        open_dataset(str(path), "train")


@pytest.mark.parametrize("make", ["missing", "text", "empty_dir"])
def test_unknown_spec_says_what_was_expected(tmp_path, make):
    target = tmp_path / "thing"
    if make == "text":
        target.write_text("hello")
    elif make == "empty_dir":
        target.mkdir()
    with pytest.raises(DatasetError, match="expected builtin:shapes, a COCO JSON file"):
        open_dataset(str(target), "train")


def test_builtin_spec_options():
    cfg = shapes_config_from_spec("builtin:shapes?train=20&val=5&size=64&seed=3")
    assert (cfg.num_train, cfg.num_val, cfg.image_size, cfg.seed) == (20, 5, 64, 3)
    assert shapes_config_from_spec("builtin:shapes").num_train == 1000
    with pytest.raises(ConfigError, match="unknown built-in dataset 'cars'"):
        shapes_config_from_spec("builtin:cars")
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        shapes_config_from_spec("builtin:shapes?colour=red")
    with pytest.raises(ConfigError, match="must be an integer"):
        shapes_config_from_spec("builtin:shapes?train=many")


def test_open_builtin_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    ds = open_dataset("builtin:shapes?train=3&val=2&size=48", "val")
    assert len(ds) == 2 and ds.num_classes == 6
    assert ds[0].image.shape == (3, 48, 48)
    assert json.loads((ds.source).read_text())["info"]["generator"]["num_val"] == 2
