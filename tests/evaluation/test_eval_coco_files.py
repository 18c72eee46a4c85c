"""Checking ground-truth and results files: one clear error naming the file and the entry."""

from __future__ import annotations

import copy

import pytest
from coco_synthetic import make_predictions, write_json

from workbench.errors import DatasetError, PredictionFileError, WorkbenchError
from workbench.evaluation.coco_files import (
    coco_gt_from_dict,
    load_coco_gt,
    load_results,
    validate_results,
)

GOOD = {"image_id": 10, "category_id": 2, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.5}


def _with(**changes) -> dict:
    entry = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is _DELETE:
            del entry[key]
        else:
            entry[key] = value
    return entry


_DELETE = object()

BAD_ENTRIES = {
    "not an object": ([1, 2, 3], "must be a JSON object"),
    "missing score": (_with(score=_DELETE), "missing 'score'"),
    "missing two keys": (_with(bbox=_DELETE, image_id=_DELETE), "missing 'image_id', 'bbox'"),
    "string image id": (_with(image_id="10"), "'image_id' must be an integer"),
    "float category id": (_with(category_id=2.5), "'category_id' must be an integer"),
    "boolean category id": (_with(category_id=True), "'category_id' must be an integer"),
    "three numbers": (_with(bbox=[1.0, 2.0, 3.0]), "'bbox' must be a list of 4 numbers"),
    "string in bbox": (_with(bbox=[1.0, "2", 3.0, 4.0]), "'bbox' must be a list of 4 numbers"),
    "bbox not a list": (_with(bbox="1 2 3 4"), "'bbox' must be a list of 4 numbers"),
    "negative width": (_with(bbox=[1.0, 2.0, -3.0, 4.0]), "negative width or height"),
    "negative height": (_with(bbox=[1.0, 2.0, 3.0, -0.5]), "negative width or height"),
    "nan coordinate": (_with(bbox=[float("nan"), 2.0, 3.0, 4.0]), "non-finite"),
    "inf coordinate": (_with(bbox=[1.0, 2.0, float("inf"), 4.0]), "non-finite"),
    "nan score": (_with(score=float("nan")), "'score' is not finite"),
    "inf score": (_with(score=float("-inf")), "'score' is not finite"),
    "string score": (_with(score="high"), "'score' must be a number"),
    "unknown image": (_with(image_id=999), "'image_id' 999 is not an image of the ground truth"),
    "unknown category": (
        _with(category_id=3),
        "'category_id' 3 is not a category of the ground truth",
    ),
}


@pytest.fixture
def coco_gt(gt_dict):
    return coco_gt_from_dict(gt_dict)


@pytest.mark.parametrize("kind", sorted(BAD_ENTRIES))
def test_each_kind_of_bad_entry_names_file_index_count_and_reason(tmp_path, coco_gt, kind):
    entry, reason = BAD_ENTRIES[kind]
    path = write_json(tmp_path / "preds.json", [GOOD, GOOD, entry, GOOD])
    with pytest.raises(PredictionFileError) as info:
        load_results(path, coco_gt)
    message = str(info.value)
    assert str(path) in message
    assert "1 of 4 detections are bad" in message
    assert "index 2" in message
    assert reason in message


def test_count_covers_every_bad_entry_and_index_is_the_first(coco_gt):
    results = [GOOD, _with(score=None), GOOD, _with(image_id=5), _with(bbox=[])]
    with pytest.raises(
        PredictionFileError, match=r"run\.json: 3 of 5 detections are bad; the first is at index 1"
    ):
        validate_results(results, coco_gt, source="run.json")


def test_good_results_come_back_as_clean_copies(coco_gt, gt_dict):
    results = make_predictions(gt_dict)
    results[0]["extra"] = "kept out"
    checked = validate_results(results, coco_gt)
    assert len(checked) == len(results)
    assert set(checked[0]) == {"image_id", "category_id", "bbox", "score"}
    assert checked[0]["bbox"] == results[0]["bbox"] and checked[0]["bbox"] is not results[0]["bbox"]


@pytest.mark.parametrize(
    "text, reason",
    [
        ('[{"image_id": 10,', "not valid JSON"),
        ('{"detections": []}', "must hold a JSON list of detections, got a JSON object"),
        ('{"annotations": [], "images": []}', "looks like a ground-truth file"),
        ("42", "must hold a JSON list"),
    ],
)
def test_malformed_results_file(tmp_path, coco_gt, text, reason):
    path = tmp_path / "preds.json"
    path.write_text(text)
    with pytest.raises(PredictionFileError, match=reason) as info:
        load_results(path, coco_gt)
    assert str(path) in str(info.value)


def test_unreadable_results_file(tmp_path, coco_gt):
    with pytest.raises(PredictionFileError, match="results file not found"):
        load_results(tmp_path / "missing.json", coco_gt)
    with pytest.raises(PredictionFileError, match="directory"):
        load_results(tmp_path, coco_gt)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PredictionFileError, match="cannot read"):
        load_results(binary, coco_gt)


def _gt_with(gt: dict, mutate) -> dict:
    gt = copy.deepcopy(gt)
    mutate(gt)
    return gt


GT_PROBLEMS = {
    "not an object": (lambda gt: gt.clear() or gt.update({"x": 1}), "needs a list 'images'"),
    "no categories": (lambda gt: gt.pop("categories"), "needs a list 'categories'"),
    "image without id": (
        lambda gt: gt["images"][2].pop("id"),
        "1 of 6 images are bad; the first is at index 2: missing 'id'",
    ),
    "duplicate category": (
        lambda gt: gt["categories"].append({"id": 2, "name": "again"}),
        "duplicate 'id' 2",
    ),
    "duplicate annotation id": (
        lambda gt: gt["annotations"][3].update(id=1),
        "index 3: duplicate 'id' 1",
    ),
    "bad bbox": (
        lambda gt: gt["annotations"][0].update(bbox=[1, 2, 3]),
        "index 0: 'bbox' must be a list of 4 numbers",
    ),
    "unknown category": (
        lambda gt: gt["annotations"][1].update(category_id=4),
        "'category_id' 4 is not in 'categories'",
    ),
    "unknown image": (
        lambda gt: gt["annotations"][1].update(image_id=4),
        "'image_id' 4 is not in 'images'",
    ),
    "negative area": (lambda gt: gt["annotations"][1].update(area=-1.0), "'area' is negative"),
    "bad iscrowd": (lambda gt: gt["annotations"][1].update(iscrowd=2), "'iscrowd' must be 0 or 1"),
}


@pytest.mark.parametrize("kind", sorted(GT_PROBLEMS))
def test_bad_ground_truth_raises_dataset_error_naming_the_file(tmp_path, gt_dict, kind):
    mutate, reason = GT_PROBLEMS[kind]
    path = write_json(tmp_path / "instances.json", _gt_with(gt_dict, mutate))
    with pytest.raises(DatasetError) as info:
        load_coco_gt(path)
    assert str(info.value).startswith(f"{path}: ")
    assert reason in str(info.value)


def test_ground_truth_that_is_not_json_or_missing(tmp_path):
    broken = tmp_path / "gt.json"
    broken.write_text('{"images": [')
    with pytest.raises(DatasetError, match="gt.json: ground-truth file is not valid JSON"):
        load_coco_gt(broken)
    with pytest.raises(WorkbenchError, match="ground-truth file not found"):
        load_coco_gt(tmp_path / "nope.json")
    top_list = write_json(tmp_path / "list.json", [])
    with pytest.raises(DatasetError, match="must be a JSON object, got array"):
        load_coco_gt(top_list)
