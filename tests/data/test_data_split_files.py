"""Training and validation given as one COCO JSON file each: a folder of ``<split>.json`` files,
a dataset file (.yaml), a ``splits:`` spec, and the ``train --data --val-data --images`` flags."""

from __future__ import annotations

import argparse

import pytest

from data_builders import coco_dict, write_coco
from workbench.cli import _train_data_spec
from workbench.data.sources import list_sources, open_dataset, resolve_source, split_files_spec
from workbench.errors import DatasetError, WorkbenchError


def _two_splits(folder, image_folder="images"):
    """``folder/train.json`` (3 images) and ``folder/val.json`` (the first 2), one image folder."""
    write_coco(folder, json_name="train.json", image_folder=image_folder)
    val = coco_dict()
    val["images"] = val["images"][:2]
    val["annotations"] = [a for a in val["annotations"] if a["image_id"] in (1, 2)]
    write_coco(folder, val, json_name="val.json", image_folder=image_folder)
    return folder


def test_a_folder_with_images_train_json_and_val_json_opens_as_it_is(tmp_path):
    _two_splits(tmp_path)
    train = open_dataset(str(tmp_path), "train")
    val = open_dataset(str(tmp_path), "val")
    assert (len(train), len(val)) == (3, 2)
    assert train[0].image.shape[-2:] == (30, 40)
    assert [s.split for s in list_sources(str(tmp_path))] == ["train", "val"]


def test_a_missing_split_in_a_json_folder_names_the_file_and_the_splits_found(tmp_path):
    _two_splits(tmp_path)
    with pytest.raises(DatasetError, match=r"split 'test'.*train, val") as info:
        resolve_source(str(tmp_path), "test")
    assert "test.json" in str(info.value)


def test_dataset_file_with_relative_paths_and_a_shared_image_folder(tmp_path):
    _two_splits(tmp_path / "data", image_folder="pictures")
    spec = tmp_path / "data" / "dataset.yaml"
    spec.write_text("images: pictures\ntrain: {annotations: train.json}\nval:\n  annotations: val.json\n")
    assert len(open_dataset(str(spec), "train")) == 3
    assert len(open_dataset(str(spec), "val")) == 2
    assert [s.split for s in list_sources(str(spec))] == ["train", "val"]


def test_dataset_file_errors_name_the_file_and_the_problem(tmp_path):
    _two_splits(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {annotations: train.json, imgs: images}\n")
    with pytest.raises(DatasetError, match="unknown keys: imgs") as info:
        open_dataset(str(bad), "train")
    assert str(bad) in str(info.value)
    missing = tmp_path / "missing.yaml"
    missing.write_text("train: {annotations: nowhere.json}\n")
    with pytest.raises(DatasetError, match="no such annotation file") as info:
        open_dataset(str(missing), "train")
    assert "nowhere.json" in str(info.value)
    with pytest.raises(DatasetError, match=r"no split 'val' \(splits: train\)"):
        open_dataset(str(missing), "val")


def test_split_spec_from_the_train_flags_opens_both_splits(tmp_path):
    _two_splits(tmp_path, image_folder="imgs")
    args = argparse.Namespace(data=str(tmp_path / "train.json"), val_data=str(tmp_path / "val.json"),
                              images=str(tmp_path / "imgs"))
    spec = _train_data_spec(args)
    assert spec == split_files_spec({"train": tmp_path / "train.json", "val": tmp_path / "val.json"}, tmp_path / "imgs")
    assert len(open_dataset(spec, "train")) == 3
    assert len(open_dataset(spec, "val")) == 2


def test_train_flags_without_val_data_use_the_training_file_for_both(tmp_path):
    _two_splits(tmp_path, image_folder="imgs")
    args = argparse.Namespace(data=str(tmp_path / "train.json"), val_data=None, images=str(tmp_path / "imgs"))
    assert len(open_dataset(_train_data_spec(args), "val")) == 3
    args = argparse.Namespace(data=None, val_data=str(tmp_path / "val.json"), images=None)
    with pytest.raises(WorkbenchError, match="need --data"):
        _train_data_spec(args)


def test_split_spec_with_a_wrong_image_folder_names_it(tmp_path):
    _two_splits(tmp_path)
    spec = split_files_spec({"train": tmp_path / "train.json"}, tmp_path / "nope")
    with pytest.raises(DatasetError, match="no such image folder") as info:
        open_dataset(spec, "train")
    assert "nope" in str(info.value)
