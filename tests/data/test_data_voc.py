"""VOC datasets: the same samples as COCO, difficult boxes as ignore, and clear errors."""

from __future__ import annotations

import pytest
import torch
from data_builders import VOC_IMAGES, voc_xml, write_json, write_voc
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.data.coco import CocoDetection
from workbench.data.sample import Sample
from workbench.data.sources import list_sources, open_dataset
from workbench.data.voc import VOC_CLASSES, VocDetection
from workbench.errors import DatasetError


@pytest.fixture
def voc_root(tmp_path):
    return write_voc(tmp_path / "VOC2007")


def test_voc_sample_structure(voc_root):
    ds = VocDetection(voc_root, "trainval")
    assert len(ds) == 3 and ds.num_classes == 20 and ds.image_ids == [1, 2, 3]
    s = ds[0]
    assert isinstance(s, Sample)
    assert s.image.shape == (3, 40, 48) and s.image.dtype == torch.uint8
    assert s.orig_size == (40, 48) and s.file_name == "000005.jpg" and s.image_id == 1
    # 1-based inclusive VOC pixels -> 0-based pixel edges: [xmin - 1, ymin - 1, xmax, ymax]
    assert s.boxes.tolist() == [[2.0, 3.0, 20.0, 30.0], [9.0, 0.0, 48.0, 40.0]]
    assert s.labels.tolist() == [VOC_CLASSES.index("chair") + 1, VOC_CLASSES.index("person") + 1]
    assert s.ignore.tolist() == [False, True]


def test_voc_clipping_empty_images_and_summary(voc_root):
    ds = VocDetection(voc_root, "trainval")
    assert ds[1].boxes.tolist() == [[0.0, 0.0, 36.0, 36.0], [29.0, 29.0, 36.0, 36.0]]
    assert len(ds[2]) == 0
    summary = ds.summary
    assert (summary.images, summary.annotations, summary.empty_images) == (3, 4, 1)
    assert (summary.clipped, summary.dropped, summary.ignored) == (1, 0, 1)
    assert summary.per_class["car"] == 2 and summary.per_class["dog"] == 0


def test_voc_and_coco_return_the_same_samples(voc_root, tmp_path):
    voc = VocDetection(voc_root, "trainval")
    coco_file = write_json(tmp_path / "voc_as_coco.json", voc.to_coco_dict())
    coco = CocoDetection(coco_file, voc_root / "JPEGImages")
    assert coco.categories == voc.categories
    for i in range(len(voc)):
        a, b = voc[i], coco[i]
        for field in ("image", "boxes", "labels", "ignore"):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and torch.equal(x, y), field
        assert (a.image_id, a.orig_size, a.file_name) == (b.image_id, b.orig_size, b.file_name)


def test_voc_difficult_is_ignored_by_the_coco_evaluator(voc_root, tmp_path, capsys):
    voc = VocDetection(voc_root, "trainval")
    gt_dict = voc.to_coco_dict()
    assert [a["iscrowd"] for a in gt_dict["annotations"]] == [0, 1, 0, 0]
    gt = COCO(str(write_json(tmp_path / "gt.json", gt_dict)))
    # perfect detections of the non-difficult boxes only: a difficult miss must not count
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt_dict["annotations"]
        if not a["iscrowd"]
    ]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP50


def test_custom_class_names(tmp_path):
    root = write_voc(tmp_path / "v", images={"a": (20, 20, [("apple", 2, 2, 10, 10, False)])})
    ds = VocDetection(root, "trainval", class_names=("pear", "apple"))
    assert ds[0].labels.tolist() == [2]
    assert ds.categories == [{"id": 1, "name": "pear"}, {"id": 2, "name": "apple"}]


def test_open_voc_root_and_list_its_splits(voc_root):
    ds = open_dataset(str(voc_root), "test")
    assert isinstance(ds, VocDetection) and len(ds) == 1
    assert [s.split for s in list_sources(str(voc_root))] == ["test", "trainval"]  # not car_trainval


def test_xml_without_size_reads_the_image_header(voc_root):
    xml = voc_root / "Annotations" / "000009.xml"
    xml.write_text("<annotation><filename>000009.jpg</filename></annotation>")
    ds = VocDetection(voc_root, "trainval")
    assert ds[2].orig_size == (20, 30)


# ----------------------------------------------------------------------------- errors


def _error(root, split="trainval") -> str:
    with pytest.raises(DatasetError) as info:
        VocDetection(root, split)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_split_file(voc_root):
    message = _error(voc_root, "val")
    assert "no split file for 'val'" in message and "val.txt" in message


def test_missing_annotation_file(voc_root):
    (voc_root / "Annotations" / "000007.xml").unlink()
    message = _error(voc_root)
    assert "000007.xml" in message and "annotation file not found" in message


def test_malformed_xml(voc_root):
    (voc_root / "Annotations" / "000007.xml").write_text("<annotation><object></annotation>")
    message = _error(voc_root)
    assert "000007.xml" in message and "malformed XML" in message


def test_wrong_root_element(voc_root):
    (voc_root / "Annotations" / "000007.xml").write_text("<html></html>")
    assert "expected <annotation>" in _error(voc_root)


def test_unknown_class(voc_root):
    name = "000007"
    (voc_root / "Annotations" / f"{name}.xml").write_text(voc_xml(name, 36, 36, [("unicorn", 1, 1, 5, 5, 0)]))
    message = _error(voc_root)
    assert f"{name}.xml" in message and "image id 2" in message and "unknown class 'unicorn'" in message


def test_object_without_bndbox(voc_root):
    text = voc_xml("000005", 48, 40, VOC_IMAGES["000005"][2])
    start, end = text.index("<bndbox>"), text.index("</bndbox>") + len("</bndbox>")
    (voc_root / "Annotations" / "000005.xml").write_text(text[:start] + text[end:])
    message = _error(voc_root)
    assert "000005.xml" in message and "object 0 (chair) has no <bndbox>" in message


def test_non_numeric_coordinate(voc_root):
    text = voc_xml("000005", 48, 40, VOC_IMAGES["000005"][2]).replace("<xmax>20</xmax>", "<xmax>twenty</xmax>")
    (voc_root / "Annotations" / "000005.xml").write_text(text)
    assert "<xmax> is not a number: 'twenty'" in _error(voc_root)


def test_missing_coordinate(voc_root):
    text = voc_xml("000005", 48, 40, VOC_IMAGES["000005"][2]).replace("<ymin>4</ymin>", "")
    (voc_root / "Annotations" / "000005.xml").write_text(text)
    assert "object 0 (chair) has no <ymin>" in _error(voc_root)


def test_missing_image_is_reported_when_loaded(voc_root):
    ds = VocDetection(voc_root, "trainval")
    (voc_root / "JPEGImages" / "000007.jpg").unlink()
    with pytest.raises(DatasetError, match="image file not found") as info:
        ds[1]
    assert "000007.jpg" in str(info.value) and "image id 2" in str(info.value)
