"""A one-epoch Libra R-CNN run on a handful of 96-pixel images: the training entry point, the
run directory and the checkpoint read back, and the figures' inputs from the run."""

from __future__ import annotations

import torch

from detector_support import SMALL_TWO_STAGE_96, shapes_96, small_run_fixture

from workbench.methods.libra.analysis import (
    balanced_l1_settings,
    box_stage_sampling,
    figure_inputs,
    level_magnitudes,
    model_proposals,
    negative_ious,
)
from workbench.methods.libra.model import IoUBalancedSampler, LibraRCNNConfig

DATA = shapes_96(train=4, val=2)


def test_overrides_reach_the_switches_and_the_baseline():
    from workbench.pipelines.params import train_config

    cfg = train_config("libra_rcnn", "tiny", model_overrides={"balanced_l1": False, "num_bins": 5, "min_size": 96})
    assert isinstance(cfg.model, LibraRCNNConfig)
    assert not cfg.model.balanced_l1 and cfg.model.num_bins == 5 and cfg.model.base.min_size == 96


run_dir = small_run_fixture("libra_rcnn", data=DATA, epochs=1, batch_size=2, model_overrides=SMALL_TWO_STAGE_96)


def test_a_run_trains_and_its_model_reads_back(run_dir):
    inputs = figure_inputs(str(run_dir), num_images=2)
    assert inputs.source.startswith("libra_rcnn run") and inputs.two_stage and inputs.has_pyramid
    assert isinstance(inputs.model.roi_heads.stages[0].sampler, IoUBalancedSampler)
    proposals, targets = model_proposals(inputs.model, inputs.images, inputs.targets)
    ious = negative_ious(proposals, targets, generator=torch.Generator().manual_seed(0),
                         **box_stage_sampling(inputs.model))
    assert all(v.size > 0 for v in ious.values())
    names, before, after = level_magnitudes(inputs.model, inputs.images)
    assert names == ["0", "1", "2", "pool"] and before.shape == after.shape == (4,)
    assert balanced_l1_settings(str(run_dir)) == (((0.5, 1.5),), 1.0)


def test_a_libra_retinanet_run_trains_and_reads_back(tmp_path, monkeypatch):
    from workbench.engine.trainer import train
    from workbench.pipelines.params import train_config

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    overrides = {"backbone_weights": None, "backbone_norm": "bn", "fpn_channels": 32, "min_size": 96,
                 "max_size": 96, "head_num_convs": 1, "topk_candidates": 100}
    cfg = train_config("libra_retinanet", "tiny", data=DATA, epochs=1, batch_size=2, device="cpu", seed=0,
                       model_overrides=overrides)
    train(cfg, tmp_path / "run", progress=False)
    inputs = figure_inputs(str(tmp_path / "run"), num_images=2)
    assert not inputs.two_stage and inputs.has_pyramid
    assert inputs.model.loss.box_loss.keywords == {"alpha": 0.5, "gamma": 1.5, "beta": 0.11}
    names, _, after = level_magnitudes(inputs.model, inputs.images)
    assert names == ["0", "1", "2", "p6", "p7"] and after.shape == (5,)
    assert balanced_l1_settings(str(tmp_path / "run")) == (((0.5, 1.5),), 0.11)
    assert balanced_l1_settings(str(tmp_path / "run"), [[0.3, 1.0]], 1.0) == (((0.3, 1.0),), 1.0)
