"""Flat notebook parameters become a TrainConfig; model overrides reach wrapped configs."""

from __future__ import annotations

import pytest

from workbench.errors import ConfigError
from workbench.methods import build_preset
from workbench.pipelines.params import override_model, train_config


def test_overrides_reach_the_baseline_config_inside_kl_rpn():
    cfg = train_config("kl_rpn", "tiny", data="builtin:shapes?train=8", epochs=2, batch_size=3, seed=5,
                       model_overrides={"min_size": 96, "gamma": 0.25, "anchor_sizes": [[8], [16], [32], [64], [128]]})
    assert cfg.method == "kl_rpn" and cfg.data.spec == "builtin:shapes?train=8"
    assert cfg.schedule.epochs == 2 and cfg.batch_size == 3 and cfg.seed == 5
    assert cfg.model.gamma == 0.25
    assert cfg.model.base.min_size == 96
    assert cfg.model.base.anchor_sizes == ((8,), (16,), (32,), (64,), (128,))


def test_baseline_overrides_apply_directly():
    cfg = train_config("faster_rcnn", "tiny", model_overrides={"fpn_channels": 32}, log_every_steps=1)
    assert cfg.model.fpn_channels == 32 and cfg.log_every_steps == 1
    untouched = train_config("faster_rcnn", "tiny")
    preset = build_preset("faster_rcnn", "tiny")
    assert preset.model.fpn_channels != 32 and preset.log_every_steps != 1  # the overrides changed something
    assert untouched.model == preset.model and untouched.schedule == preset.schedule


def test_unknown_model_fields_are_refused_by_name():
    base = train_config("kl_rpn", "tiny").model
    with pytest.raises(ConfigError, match=r"unknown model config fields \['fpn_chanels'\]"):
        override_model(base, {"fpn_chanels": 32})
