"""``check_data`` and ``workbench data check``: a report for good data, one line for bad data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_builders import PROPERTY_CONFIG, coco_dict, write_coco, write_coco_root, write_voc

from workbench.cli import main
from workbench.data.check import check_data
from workbench.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]


def test_report_of_the_shapes_dataset(shapes_root):
    report = check_data(str(shapes_root))
    assert [s.split for s in report.splits] == ["train", "val"]
    for split in report.splits:
        data = json.loads((shapes_root / "annotations" / f"instances_{split.split}.json").read_text())
        assert split.summary.images == len(data["images"])
        assert split.summary.annotations == len(data["annotations"])
        assert sum(split.summary.per_class.values()) == len(data["annotations"])
    assert report.splits[0].summary.images == PROPERTY_CONFIG.num_train


def test_report_counts_clipped_dropped_and_crowd(tmp_path):
    report = check_data(str(write_coco_root(tmp_path / "root", splits=("train",))))
    s = report.splits[0].summary
    assert (s.images, s.annotations, s.empty_images, s.clipped, s.dropped, s.ignored) == (3, 3, 1, 1, 2, 1)


def test_report_table_is_readable(tmp_path):
    text = check_data(str(write_coco_root(tmp_path / "root"))).format()
    lines = text.splitlines()
    header = next(line for line in lines if line.split() == ["train", "val"])
    width = len(header)
    rows = {" ".join(line.split()[:-2]): line.split()[-2:] for line in lines[lines.index(header) + 1 :]}
    assert rows["images"] == ["3", "3"]
    assert rows["clipped boxes"] == ["1", "1"] and rows["dropped boxes"] == ["2", "2"]
    assert rows["ignored (crowd/difficult)"] == ["1", "1"]
    assert rows["cat"] == ["1", "1"] and rows["dog"] == ["2", "2"]
    assert all(len(line) == width for line in lines[lines.index(header) :])  # aligned columns


def test_check_of_a_voc_root_reads_every_split(tmp_path):
    report = check_data(str(write_voc(tmp_path / "VOC2007")))
    assert [(s.split, s.kind, s.summary.images) for s in report.splits] == [("test", "voc", 1), ("trainval", "voc", 3)]
    assert report.splits[1].summary.ignored == 1


def test_check_of_a_single_json_file(tmp_path):
    path = write_coco(tmp_path, json_name="instances_mine.json", image_folder="pictures")
    report = check_data(str(path), image_dir=tmp_path / "pictures")
    assert [s.split for s in report.splits] == ["mine"]


def test_check_opens_every_image(tmp_path):
    root = write_coco_root(tmp_path / "root")
    (root / "val" / "c.png").unlink()
    with pytest.raises(DatasetError, match="image file not found") as info:
        check_data(str(root))
    assert str(root / "val" / "c.png") in str(info.value) and "image id 5" in str(info.value)


def test_check_finds_a_corrupt_image(tmp_path):
    root = write_coco_root(tmp_path / "root")
    path = root / "train" / "b.png"
    path.write_bytes(path.read_bytes()[:60])  # truncated
    with pytest.raises(DatasetError, match="cannot read the image") as info:
        check_data(str(root))
    assert "image id 2" in str(info.value)


def test_check_finds_a_wrong_image_size(tmp_path):
    data = coco_dict()
    path = write_coco(tmp_path, data)
    data["images"][0]["width"] = 41
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="40x30 pixels but the annotations say 41x30"):
        check_data(str(path))


def test_cli_prints_the_report(tmp_path, capsys):
    assert main(["data", "check", "-q", str(write_coco_root(tmp_path / "root"))]) == 0
    out = capsys.readouterr().out
    assert "every image opens" in out and "annotations" in out


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "workbench", "data", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_cli_reports_a_broken_dataset_in_one_line(tmp_path):
    data = coco_dict()
    data["annotations"][1]["image_id"] = 42
    path = write_coco(tmp_path, data)
    result = _run_cli("-q", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("workbench: error: ")
    assert str(path) in lines[0] and "annotation id 12" in lines[0] and "image id 42" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_reports_a_path_that_is_no_dataset(tmp_path):
    result = _run_cli(str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.startswith("workbench: error: ") and result.stderr.count("\n") == 1
    assert "no such file or folder" in result.stderr
