"""A one-epoch RefineDet run on a handful of 96-pixel images through the training entry point
(as ``workbench train --method refinedet --preset tiny --max-train-images 8 --max-val-images 4
--epochs 1``), read back, traced, and summarised by the anchor statistics."""

from __future__ import annotations

import json
import math

from detector_support import SMALL_REFINEDET_96, metrics_records, shapes_96, small_run_fixture

from workbench.methods.refinedet.model import RefineDet

run_dir = small_run_fixture("refinedet", data=shapes_96(train=8, val=4), epochs=1, batch_size=2,
                            model_overrides=SMALL_REFINEDET_96)


def test_the_run_trains_evaluates_and_reads_back(run_dir):
    from workbench.engine.loading import open_trained_run

    records = metrics_records(run_dir)
    losses = [r for r in records if "loss_odm_cls" in r]
    assert losses and all(math.isfinite(r["loss_arm_cls"]) and math.isfinite(r["loss_odm_box"]) for r in losses)
    assert any("AP50" in json.dumps(r) for r in records)
    run = open_trained_run(run_dir, "best", device="cpu")
    assert isinstance(run.model, RefineDet) and run.cfg.method == "refinedet"


def test_model_overrides_change_inference_and_keep_the_weights(run_dir):
    """An inference setting replaced at load time: same weights, at most 3 detections an image."""
    import torch

    from workbench.engine.inference import predict_dataset
    from workbench.engine.loading import open_trained_run

    plain = open_trained_run(run_dir, "last", device="cpu")
    capped = open_trained_run(run_dir, "last", device="cpu", model_overrides={"detections_per_img": 3,
                                                                               "score_thresh": 0.0})
    assert capped.cfg.model.detections_per_img == 3 and plain.cfg.model.detections_per_img != 3
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), capped.model.state_dict().values()))
    counts = [len(p.detections.boxes) for p in predict_dataset(capped.model, capped.dataset, capped.device, progress=False)]
    assert counts == [3] * 4


def test_traces_and_anchor_statistics(run_dir):
    from workbench.data.sources import open_dataset
    from workbench.engine.predict import predict_run
    from workbench.inspection import load_traces
    from workbench.methods.refinedet.analysis import anchor_statistics, gt_boxes_by_image

    predict_run(run_dir, device="cpu", progress=False, trace=True)
    traces = load_traces(run_dir, "val")
    assert traces.method == "refinedet" and len(traces) == 4
    data = open_dataset(traces.meta["data"], "val")
    stats = anchor_statistics(traces, gt_boxes_by_image(data))
    assert stats.images == 4 and stats.matched > 0
    assert 0.0 <= stats.share_filtered <= 1.0 and 0.0 <= stats.mean_iou_after <= 1.0
