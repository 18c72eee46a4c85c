"""Traces: prediction with a recorder changes no detection, and the saved format round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.data.sources import open_dataset
from workbench.engine.inference import predict_dataset
from workbench.engine.predict import predict_run
from workbench.engine.trainer import load_trained_model
from workbench.errors import WorkbenchError
from workbench.inspection import FORMAT_NAME, FORMAT_VERSION, ImageTrace, load_traces, save_traces, trace_dir
from workbench.inspection.collect import iter_traced_predictions
from workbench.inspection.traces import INDEX_KEY, MANIFEST

BASELINE_RECORDS = {"anchors", "rpn_proposals_pre_nms", "rpn_nms", "rpn_proposals", "rcnn_candidates", "rcnn_nms",
                    "detections"}


@pytest.fixture(scope="module")
def traced(frcnn_run):
    """(model, val dataset, plain predictions, [(prediction, trace)]) of the Faster R-CNN run."""
    model, cfg, _ = load_trained_model(frcnn_run, "best", "cpu")
    dataset = open_dataset(cfg.data.spec, cfg.data.val_split)
    plain = predict_dataset(model, dataset, torch.device("cpu"), batch_size=2)
    pairs = list(iter_traced_predictions(model, dataset, "cpu", batch_size=2))  # a device name, as the loop takes
    return model, dataset, plain, pairs


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaN equals NaN)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_bytes = lambda t: t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()  # noqa: E731
    return as_bytes(a) == as_bytes(b)


def test_tracing_leaves_detections_unchanged(traced):
    _, dataset, plain, pairs = traced
    traced_preds = sorted((p for p, _ in pairs), key=lambda p: p.image_id)
    assert [p.image_id for p in traced_preds] == [p.image_id for p in plain] == sorted(dataset.image_ids)
    for a, b in zip(plain, traced_preds):
        assert len(a.detections) > 0
        for name in ("boxes", "scores", "labels"):
            assert torch.equal(getattr(a.detections, name), getattr(b.detections, name)), (a.image_id, name)


def test_trace_holds_every_stage_and_its_detections_are_the_predictions(traced):
    _, _, _, pairs = traced
    for prediction, trace in pairs:
        assert BASELINE_RECORDS <= set(trace.records)
        assert trace.image_id == prediction.image_id and trace.orig_size == (96, 96)
        assert torch.equal(trace["detections"]["boxes"], prediction.detections.boxes)
        nms = trace["rcnn_nms"]
        n = len(prediction.detections)
        assert torch.equal(nms["scores"][nms["keep"][:n]], prediction.detections.scores)
        suppressed = nms["suppressed_by"] >= 0
        assert int(suppressed.sum()) + nms["keep"].shape[0] == nms["scores"].shape[0]
        assert bool((nms["suppressor_iou"][suppressed] > nms["iou_threshold"]).all())
        assert trace["rpn_proposals"]["boxes"].shape[0] <= 150


def _odd_record() -> dict[str, torch.Tensor]:
    """Tensors the format must also carry: 0-d, empty, bool, bfloat16, NaN."""
    return {
        "scalar": torch.tensor(0.25, dtype=torch.float64),
        "empty": torch.zeros((0, 4)),
        "flags": torch.tensor([True, False, True]),
        "mask": torch.rand(3, 7, generator=torch.Generator().manual_seed(0)) > 0.5,  # 21 bits in 3 bytes
        "half": torch.tensor([[1.5, -2.0], [3.25, float("nan")]], dtype=torch.bfloat16),
        "nan": torch.tensor([float("nan"), 1.0]),
    }


def test_saved_traces_load_back_losslessly(traced, tmp_path):
    _, _, _, pairs = traced
    originals = [t for _, t in pairs]
    originals[1] = ImageTrace(originals[1].image_id, originals[1].file_name, originals[1].orig_size,
                              {**originals[1].records, "odd": _odd_record()})
    out = save_traces(originals, tmp_path / "traces" / "val", method="faster_rcnn", split="val",
                      meta={"note": "round trip"}, shard_size=3)
    loaded = load_traces(tmp_path, "val")
    assert len(loaded) == len(originals) and loaded.method == "faster_rcnn" and loaded.split == "val"
    assert loaded.meta == {"note": "round trip"} and "odd" in loaded.record_names
    # the anchors of the four 96 x 96 images: one network-input size, one shared file
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "shard-00000.npz", "shard-00001.npz", "shared-00000.npy",
                                                "shared-00001.npy"]
    for original, back in zip(originals, loaded):
        assert (back.image_id, back.file_name, back.orig_size) == (original.image_id, original.file_name,
                                                                    original.orig_size)
        assert set(back.records) == set(original.records)
        for name, fields in original.records.items():
            assert set(back[name]) == set(fields), name
            for field_name, tensor in fields.items():
                assert _same_tensor(tensor, back[name][field_name]), (original.image_id, name, field_name)
    assert loaded.by_image_id(originals[2].image_id).image_id == originals[2].image_id


def test_equal_tensors_are_stored_once_and_anchors_once_per_directory(traced, tmp_path):
    _, _, _, pairs = traced
    traces = [t for _, t in pairs]
    save_traces(traces, tmp_path / "val", method="faster_rcnn", split="val", shard_size=2)
    assert json.loads((tmp_path / "val" / MANIFEST).read_text())["shared"] == ["shared-00000.npy", "shared-00001.npy"]
    stored, anchor_files = 0, set()
    for shard in ("shard-00000.npz", "shard-00001.npz"):
        with np.load(tmp_path / "val" / shard, allow_pickle=False) as npz:
            index = json.loads(str(npz[INDEX_KEY]))
            stored += sum(npz[key].nbytes for key in npz.files if key != INDEX_KEY)
        anchors = [image["anchors"] for image in index["images"]]
        # the anchors are kept in network-input pixels, in the shared file, and not per image
        assert all("boxes" not in a for a in anchors)
        anchor_files |= {(index["shared"][a["network_boxes"]], index["shared"][a["levels"]]) for a in anchors}
        # rpn_nms re-uses the boxes of rpn_proposals_pre_nms
        assert all(im["rpn_nms"]["boxes"] == im["rpn_proposals_pre_nms"]["boxes"] for im in index["images"])
        # int64 levels and indices are stored narrower
        assert index["cast"][index["images"][0]["rpn_nms"]["idxs"]] == "<i8"
    as_recorded = sum(t.numel() * t.element_size() for tr in traces for f in tr.records.values() for t in f.values())
    anchor_bytes = traces[0]["anchors"]["boxes"].numel() * 4
    assert stored <= as_recorded - 4 * 2 * anchor_bytes
    assert len(anchor_files) == 1


def test_narrow_integers_is_lossless_and_picks_the_smallest_type():
    from workbench.inspection.traces import narrow_integers

    cases = [(np.array([-1, 0, 127], dtype=np.int64), np.int8), (np.array([-1, 300], dtype=np.int64), np.int16),
             (np.array([0, 70000], dtype=np.int64), np.int32), (np.array([2**40], dtype=np.int64), np.int64),
             (np.array([1.5], dtype=np.float32), np.float32), (np.array([True]), np.bool_)]
    for array, dtype in cases:
        narrow = narrow_integers(array)
        assert narrow.dtype == dtype and np.array_equal(narrow.astype(array.dtype), array)


def _numbered_traces(n: int) -> list[ImageTrace]:
    return [ImageTrace(i, f"{i}.png", (4, 5), {"detections": {"scores": torch.full((3,), float(i))}})
            for i in range(n)]


def test_opening_a_trace_directory_reads_only_the_shards_of_the_images_asked_for(tmp_path, monkeypatch):
    from workbench.inspection import traces as trace_module

    save_traces(_numbered_traces(12), tmp_path / "val", method="m", split="val", shard_size=4)
    opened, members = [], []
    real_open = trace_module.open_shard

    class CountingNpz:
        def __init__(self, npz):
            self.npz = npz

        def __getitem__(self, key):
            members.append(key)
            return self.npz[key]

        def close(self):
            self.npz.close()

    def counting_open(path):
        opened.append(path.name)
        return CountingNpz(real_open(path))

    monkeypatch.setattr(trace_module, "open_shard", counting_open)
    loaded = load_traces(tmp_path / "val")
    assert len(loaded) == 12 and opened == []  # the manifest only
    assert float(loaded[9]["detections"]["scores"][0]) == 9.0
    assert float(loaded.by_image_id(10)["detections"]["scores"][0]) == 10.0
    assert opened == ["shard-00002.npz"]
    # the index and the two images' arrays, none of the shard's other images
    assert len(members) == 3 and members[0] == INDEX_KEY
    assert float(loaded[1]["detections"]["scores"][0]) == 1.0
    assert opened == ["shard-00002.npz", "shard-00000.npz"]


def test_version_1_directories_still_load(tmp_path):
    from workbench.inspection.traces import FORMAT_NAME as NAME

    out = save_traces(_numbered_traces(2), tmp_path / "val", method="m", split="val")
    with np.load(out / "shard-00000.npz", allow_pickle=False) as npz:
        index = json.loads(str(npz[INDEX_KEY]))
        arrays = {key: npz[key] for key in npz.files if key != INDEX_KEY}
    np.savez(out / "shard-00000.npz", **{INDEX_KEY: np.array(json.dumps({"images": index["images"], "raw": {}}))},
             **arrays)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest.pop("shared")
    (out / MANIFEST).write_text(json.dumps({**manifest, "format": NAME, "version": 1}))
    assert [float(t["detections"]["scores"][1]) for t in load_traces(out)] == [0.0, 1.0]


def test_predict_with_trace_writes_the_same_results_and_a_versioned_manifest(frcnn_run, tmp_path):
    plain = predict_run(frcnn_run, tmp_path / "plain.json", device="cpu", progress=False)
    traced = predict_run(frcnn_run, tmp_path / "traced.json", device="cpu", progress=False, trace=True)
    assert json.loads(plain.read_text()) == json.loads(traced.read_text())
    manifest = json.loads((trace_dir(frcnn_run, "val") / MANIFEST).read_text())
    assert manifest["format"] == FORMAT_NAME and manifest["version"] == FORMAT_VERSION == 2
    assert manifest["method"] == "faster_rcnn" and manifest["split"] == "val" and manifest["num_images"] == 4
    assert BASELINE_RECORDS <= set(manifest["records"])
    assert [im["orig_size"] for im in manifest["images"]] == [[96, 96]] * 4
    assert [c["name"] for c in manifest["meta"]["categories"]][:2] == ["circle", "square"]
    traces = load_traces(frcnn_run)  # the only traced split
    per_image = {}
    for r in json.loads(traced.read_text()):
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    assert {t.image_id: int(t["detections"]["scores"].shape[0]) for t in traces} == per_image


def test_writing_again_replaces_the_traces(tmp_path):
    def trace(i: int) -> ImageTrace:
        return ImageTrace(i, f"{i}.png", (4, 5), {"detections": {"scores": torch.rand(3)}})

    save_traces([trace(1), trace(2), trace(3)], tmp_path / "val", method="m", split="val", shard_size=1)
    save_traces([trace(7)], tmp_path / "val", method="m", split="val")
    loaded = load_traces(tmp_path / "val")
    assert loaded.image_ids == [7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val"]
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == [MANIFEST, "shard-00000.npz"]


def test_a_failed_write_keeps_the_previous_traces(tmp_path):
    def traces():
        yield ImageTrace(1, "1.png", (4, 5), {"detections": {"scores": torch.rand(3)}})
        raise RuntimeError("prediction failed")

    save_traces([ImageTrace(9, "9.png", (4, 5), {})], tmp_path / "val", method="m", split="val")
    with pytest.raises(RuntimeError, match="prediction failed"):
        save_traces(traces(), tmp_path / "val", method="m", split="val")
    assert load_traces(tmp_path / "val").image_ids == [9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val"]


def test_loading_refuses_missing_traces_and_unknown_versions(tmp_path):
    with pytest.raises(WorkbenchError, match="--trace"):
        load_traces(tmp_path, "val")
    save_traces([ImageTrace(1, "1.png", (4, 5), {})], tmp_path / "traces" / "val", method="m", split="val")
    manifest_file = tmp_path / "traces" / "val" / MANIFEST
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "version": FORMAT_VERSION + 1}))
    with pytest.raises(WorkbenchError, match="version"):
        load_traces(tmp_path, "val")
    manifest_file.write_text(json.dumps({**manifest, "format": "something-else"}))
    with pytest.raises(WorkbenchError, match="workbench-trace"):
        load_traces(tmp_path, "val")


def test_predict_command_takes_trace(frcnn_run, tmp_path, capsys):
    from workbench.cli import main

    assert main(["predict", "--run", str(frcnn_run), "--trace", "--device", "cpu", "-q",
                 "--out", str(tmp_path / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "wrote COCO results" in out and "wrote traces" in out
    assert (tmp_path / "results.json").is_file()
    assert load_traces(frcnn_run, "val").method == "faster_rcnn"


def test_shards_are_deflated_npz_files_that_numpy_reads(tmp_path):
    import zipfile

    smooth = torch.zeros(64, 64, dtype=torch.float16)
    noisy = torch.rand(500, generator=torch.Generator().manual_seed(0))
    traces = [ImageTrace(0, "0.png", (4, 5), {"map": {"values": smooth}, "detections": {"scores": noisy}})]
    out = save_traces(traces, tmp_path / "val", method="m", split="val")
    with np.load(out / "shard-00000.npz", allow_pickle=False) as npz:
        index = json.loads(str(npz[INDEX_KEY]))["images"][0]
        assert np.array_equal(npz[index["detections"]["scores"]], noisy.numpy())
    with zipfile.ZipFile(out / "shard-00000.npz") as archive:
        infos = {info.filename: info for info in archive.infolist()}
    assert infos and all(info.compress_type == zipfile.ZIP_DEFLATED for info in infos.values())
    assert infos[f"{index['map']['values']}.npy"].compress_size < smooth.numel() * smooth.element_size() // 10
    back = load_traces(out)[0]
    assert _same_tensor(back["map"]["values"], smooth) and _same_tensor(back["detections"]["scores"], noisy)
