"""One-epoch runs of the YOLOv3 base and of the uncertainty method's baseline row on a handful of
96-pixel images through the training entry point (as ``workbench train --method yolov3 --preset
tiny --epochs 1``), read back from their run folders and traced: the generic path works for the
detector with no branch, the detector whose traces carry no uncertainty."""

from __future__ import annotations

import math

import pytest
import torch

from detector_support import SMALL_YOLOV3_96, metrics_records, shapes_96, trained_small_run

from workbench import records as R
from workbench.methods.yolov3.model import YOLOv3Detector

DATA = shapes_96(train=8, val=4)


@pytest.fixture(scope="module", params=[("yolov3", "tiny"), ("uncertainty_rescaling", "tiny_baseline")])
def run_dir(request, tmp_path_factory):
    method, preset = request.param
    with trained_small_run(tmp_path_factory, method, preset, data=DATA, epochs=1, batch_size=4,
                           model_overrides=SMALL_YOLOV3_96) as out:
        yield out


def test_the_run_trains_evaluates_reads_back_and_traces(run_dir):
    from workbench.engine.loading import open_trained_run
    from workbench.modeling import TraceRecorder

    records = metrics_records(run_dir)
    losses = [r for r in records if "loss_yolo_obj" in r]
    assert losses and all(math.isfinite(r["loss_yolo_obj"]) and math.isfinite(r["loss_yolo_box"]) for r in losses)
    assert "loss_yolo_aux" not in losses[0]
    assert any(r.get("kind") == "eval" for r in records)
    run = open_trained_run(run_dir, "last", device="cpu")
    assert type(run.model) is YOLOv3Detector and not run.model.training
    sample = run.dataset[0]
    recorder = TraceRecorder()
    with torch.no_grad():
        out = run.model([sample.image.float() / 255 if sample.image.dtype == torch.uint8 else sample.image],
                        recorder=recorder)
    trace = recorder.images[0]
    assert {R.ANCHORS, R.FINAL_CANDIDATES, R.FINAL_NMS, R.DETECTIONS} <= set(trace)
    assert R.UNCERTAINTY_MAP not in trace and "uncertainty" not in out.detections[0].extras
    assert 0 < len(out.detections[0]) <= 30
    nms = trace[R.FINAL_NMS]
    assert torch.equal(nms[R.NMS_GROUPS][nms[R.NMS_KEEP][: len(out.detections[0])]], out.detections[0].labels)
