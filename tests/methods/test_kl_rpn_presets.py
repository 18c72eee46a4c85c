"""KL-RPN presets: what they change from the baseline's, and that they read back from JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest

from workbench.config import train_config_from_dict
from workbench.methods import METHODS, build_preset, get_method
from workbench.methods.kl_rpn import KLRPNConfig


def test_registered_with_three_presets():
    assert METHODS["kl_rpn"] == "workbench.methods.kl_rpn"
    method = get_method("kl_rpn")
    assert method.model_config_type is KLRPNConfig
    assert set(method.presets) == {"tiny", "vgg16_coco", "r50_fpn_1x"}


@pytest.mark.parametrize("preset", ["tiny", "r50_fpn_1x"])
def test_presets_shared_with_the_baseline_change_only_the_kl_parts(preset):
    base, kl = build_preset("faster_rcnn", preset), build_preset("kl_rpn", preset)
    assert kl.method == "kl_rpn" and kl.preset == preset
    assert (kl.data, kl.schedule, kl.batch_size, kl.seed) == (base.data, base.schedule, base.batch_size, base.seed)
    # the model: the baseline's, with no score threshold on the (log) objectness
    assert kl.model.base == dataclasses.replace(base.model, rpn_score_thresh=None)
    assert (kl.model.gamma, kl.model.negative_variance, kl.model.rcnn_loss_weight) == (0.5, 1 / 3, 10.0)
    assert kl.model.log_var_init_std == 1e-5
    if preset == "tiny":  # the miniature regime: the baseline's optimiser too (like for like)
        assert kl.optimizer == base.optimizer
    else:  # the paper's Adam
        assert kl.optimizer.name == "adam" and kl.optimizer.betas == (0.9, 0.999)


def test_vgg16_coco_is_the_papers_setting():
    cfg = build_preset("kl_rpn", "vgg16_coco")
    base = cfg.model.base
    assert base.backbone == "vgg16" and base.min_size == 600 and base.max_size == 1000
    assert base.rpn_post_nms_top_n_test == 1000 and base.roi_output_size == 7
    assert base.anchor_sizes == ((64.0, 128.0, 256.0, 512.0),)
    o = cfg.optimizer
    assert (o.name, o.lr, o.reference_batch_size, o.betas, o.grad_clip_norm) == ("adam", 6e-5, 16, (0.9, 0.999), None)
    assert cfg.effective_lr() == pytest.approx(6e-5 * cfg.batch_size / 16)


@pytest.mark.parametrize("preset", ["tiny", "vgg16_coco", "r50_fpn_1x"])
def test_presets_read_back_from_their_json(preset):
    cfg = build_preset("kl_rpn", preset)
    again = train_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.model.base, type(cfg.model.base))


def test_bad_clamp_range_is_refused():
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="log_var_min"):
        KLRPNConfig(log_var_min=2.0, log_var_max=1.0)
