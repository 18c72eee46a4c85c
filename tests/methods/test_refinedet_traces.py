"""RefineDet's traces: the anchors once, the ARM's refined anchors, objectness and filter mask,
the ODM's candidates, the NMS ledger and each detection's anchor; saved and read back; the
arrays the figures read."""

from __future__ import annotations

import json

import numpy as np
import torch
from torchvision.ops import batched_nms

from workbench import records as R
from workbench.inspection.traces import ImageTrace, load_traces, save_traces
from workbench.methods.refinedet.analysis import (
    anchor_arrays,
    anchor_statistics,
    detection_sources,
    filtered_maps,
    matched_anchor_ious,
    most_object_like,
)
from workbench.methods.refinedet.model import RefineDetConfig, build_refinedet
from workbench.modeling import TraceRecorder
from workbench.ops.boxes import pairwise_iou

from detector_support import one_thread  # noqa: F401 (autouse)

SMALL = dict(width=0.125, size=128, tcb_channels=16, num_classes=3, anchor_sizes=(16.0, 32.0, 64.0, 128.0),
             trace_top_anchors=25, detections_per_img=20)


def traced():
    torch.manual_seed(0)
    model = build_refinedet(RefineDetConfig(**SMALL)).eval()
    with torch.no_grad():
        for conv in model.arm_head.convs["arm_logits"]:  # spread the ARM's scores: some anchors filtered
            conv.bias.copy_(torch.tensor([4.0, -4.0]).repeat(conv.bias.shape[0] // 2))
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 150, 90, generator=g)]
    recorder = TraceRecorder()
    with torch.no_grad():
        plain = model(images)
        out = model(images, recorder=recorder)
    return model, images, plain, out, recorder


def test_tracing_does_not_change_the_detections():
    _, _, plain, out, _ = traced()
    for a, b in zip(plain.detections, out.detections):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)


def test_the_anchor_records():
    model, images, _, out, recorder = traced()
    num_anchors = sum(a.shape[0] for a in out.raw["anchors"])
    for i, image in enumerate(images):
        records = recorder.images[i]
        arm = records[R.REFINED_ANCHORS]
        assert arm[R.BOXES].dtype == torch.float16 and arm[R.SCORES].dtype == torch.float16
        assert arm[R.BOXES].shape == (num_anchors, 4) and arm["filtered"].dtype == torch.bool
        assert torch.equal(arm["filtered"], out.raw["filtered"][i])
        assert 0 < int(arm["filtered"].sum()) < num_anchors
        # boxes in original pixels: the network's 128 x 128 maps back to the image's size
        h, w = image.shape[-2:]
        scale = torch.tensor([w / 128, h / 128, w / 128, h / 128])
        torch.testing.assert_close(arm[R.BOXES].float(), out.raw["refined_anchors"][i] * scale, atol=0.1, rtol=2e-3)
        torch.testing.assert_close(records[R.ANCHORS][R.BOXES], torch.cat(out.raw["anchors"]) * scale)
        top = records[R.TOP_REFINED_ANCHORS]
        assert top[R.SCORES].shape == (25,) and bool((top[R.SCORES][:-1] >= top[R.SCORES][1:]).all())
        torch.testing.assert_close(top[R.SCORES], out.raw["arm_objectness"][i][top["anchor_index"]])
        maps = records[R.FILTERED_ANCHOR_MAP]
        levels = {f"share_level{k}" for k in range(4)}
        assert maps["share"].shape == (16, 16) and set(maps) == {"share", "cell_size"} | levels | {
            f"cell_size_{name}" for name in levels}
        # one value per anchor location of each level (strides 8 to 64 on 128 px)
        assert [tuple(maps[f"share_level{k}"].shape) for k in range(4)] == [(16, 16), (8, 8), (4, 4), (2, 2)]
        torch.testing.assert_close(maps["cell_size"], torch.tensor([8 * h / 128, 8 * w / 128]))
        torch.testing.assert_close(maps["cell_size_share_level3"], torch.tensor([64 * h / 128, 64 * w / 128]))
        assert maps["share"].dtype == torch.float16
        assert abs(float(maps["share_level0"].float().mean()) - float(out.raw["filtered"][i][:768].float().mean())) < 1e-3


def test_candidates_ledger_and_the_anchor_of_each_detection():
    model, images, _, out, recorder = traced()
    for i, det in enumerate(out.detections):
        records = recorder.images[i]
        cand, nms = records[R.FINAL_CANDIDATES], records[R.FINAL_NMS]
        assert 0 < cand[R.SCORES].shape[0] <= 400
        assert not bool(out.raw["filtered"][i][cand["anchor_index"]].any())  # filtered anchors never score
        expected_keep = batched_nms(nms[R.BOXES], nms[R.SCORES], nms[R.NMS_GROUPS], 0.45)
        assert torch.equal(nms[R.NMS_KEEP], expected_keep)
        keep = nms[R.NMS_KEEP][:20]
        traced_det = records[R.DETECTIONS]
        assert torch.equal(traced_det["anchor_index"], cand["anchor_index"][keep])
        assert torch.equal(traced_det["anchor_index"], det.extras["anchor_index"])
        torch.testing.assert_close(traced_det[R.BOXES], det.boxes)
        anchors = records[R.ANCHORS][R.BOXES][traced_det["anchor_index"]]
        torch.testing.assert_close(traced_det["anchor_iou_before"], pairwise_iou(anchors, det.boxes), atol=1e-5, rtol=0)
        sources = records[R.DETECTION_ANCHORS]
        torch.testing.assert_close(traced_det["anchor_iou_after"], pairwise_iou(sources[R.BOXES], det.boxes),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(sources[R.BOXES], records[R.REFINED_ANCHORS][R.BOXES][traced_det["anchor_index"]].float(),
                                   atol=0.1, rtol=2e-3)


def test_saved_traces_read_back_with_the_anchors_once(tmp_path):
    _, images, _, out, recorder = traced()
    # the first image twice: two images of one size share their anchors
    traces = [ImageTrace(i, f"{i}.png", tuple(images[k].shape[-2:]), recorder.images[k])
              for i, k in enumerate((0, 1, 0))]
    save_traces(traces, tmp_path / "traces", method="refinedet", split="val")
    back = load_traces(tmp_path / "traces")
    assert set(back.record_names) >= {R.ANCHORS, R.REFINED_ANCHORS, R.TOP_REFINED_ANCHORS, R.DETECTION_ANCHORS,
                                      R.FILTERED_ANCHOR_MAP, R.FINAL_CANDIDATES, R.FINAL_NMS, R.DETECTIONS}
    first = back[0]
    assert first[R.REFINED_ANCHORS][R.BOXES].dtype == torch.float16
    assert torch.equal(first[R.REFINED_ANCHORS]["filtered"], recorder.images[0][R.REFINED_ANCHORS]["filtered"])
    torch.testing.assert_close(back[1][R.DETECTIONS]["anchor_iou_after"], out.detections[1].extras["anchor_iou_after"])
    shard = next((tmp_path / "traces").glob("shard-*.npz"))
    with np.load(shard, allow_pickle=False) as data:
        index = json.loads(str(data["__index__"]))["images"]
    # one network-input size: the anchors are stored once, in network pixels, and each image's
    # original-pixel anchors are recomputed on reading exactly as recorded
    assert len({image[R.ANCHORS]["network_boxes"] for image in index}) == 1
    assert all(R.BOXES not in image[R.ANCHORS] for image in index)
    assert len(list((tmp_path / "traces").glob("shared-*.npy"))) == 2  # boxes and levels
    for position, k in enumerate((0, 1, 0)):
        assert torch.equal(back[position][R.ANCHORS][R.BOXES], recorder.images[k][R.ANCHORS][R.BOXES])


def test_analysis_arrays():
    _, images, _, out, recorder = traced()
    trace = ImageTrace(0, "0.png", tuple(images[0].shape[-2:]), recorder.images[0])
    arrays = anchor_arrays(trace)
    assert arrays["refined"].dtype == torch.float32 and arrays["anchors"].shape == arrays["refined"].shape
    top = most_object_like(trace, k=10)
    assert top["objectness"].shape == (10,) and bool((top["objectness"][:-1] >= top["objectness"][1:]).all())
    sources = detection_sources(trace, max_detections=5)
    assert sources["boxes"].shape == sources["anchors"].shape == sources["refined"].shape == (5, 4)
    maps, cell = filtered_maps(trace)
    assert list(maps) == ["all levels", "level 0", "level 1", "level 2", "level 3"] and cell.shape == (2,)
    stats = anchor_statistics([trace], {0: torch.tensor([[10.0, 10.0, 60.0, 50.0]])})
    assert stats.images == 1 and stats.matched >= 1 and 0.0 < stats.share_filtered < 1.0
    assert 0.0 <= stats.mean_iou_after <= 1.0


def test_matched_anchor_ious_by_hand():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 20.0]])
    refined = torch.tensor([[0.0, 0.0, 10.0, 20.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    before, after = matched_anchor_ious(anchors, refined, gt)
    # anchor 0: IoU 0.5 (matched), refined to the GT: 1.0; anchor 2: the GT itself, refined to half of it
    torch.testing.assert_close(before, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(after, torch.tensor([1.0, 0.5]))
