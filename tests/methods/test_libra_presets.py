"""Libra presets: registered, built from the baselines' presets changing only the components,
read back from JSON, and each builds its model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from workbench.config import train_config_from_dict
from workbench.methods import METHODS, SINGLE_STAGE_VIEWS, TWO_STAGE_VIEWS, build_preset, get_method
from workbench.methods.libra.model import IoUBalancedSampler, LibraRCNNConfig, LibraRetinaNetConfig
from workbench.modeling.balanced_pyramid import find_balanced_pyramid

PAIRS = [("libra_rcnn", "faster_rcnn", LibraRCNNConfig), ("libra_retinanet", "retinanet", LibraRetinaNetConfig)]


@pytest.mark.parametrize("name,baseline,config", PAIRS)
def test_registered_with_both_presets_and_the_baselines_views(name, baseline, config):
    assert METHODS[name].startswith("workbench.methods.libra.")
    method = get_method(name)
    assert method.name == name and method.model_config_type is config
    assert set(method.presets) == {"tiny", "r50_fpn_1x"}
    assert method.record_views == get_method(baseline).record_views
    assert method.record_views == (TWO_STAGE_VIEWS if name == "libra_rcnn" else SINGLE_STAGE_VIEWS)


@pytest.mark.parametrize("name,baseline,config", PAIRS)
@pytest.mark.parametrize("preset", ["tiny", "r50_fpn_1x"])
def test_presets_are_the_baselines_with_the_components(name, baseline, config, preset):
    base, libra = build_preset(baseline, preset), build_preset(name, preset)
    assert libra.method == name and libra.preset == preset
    assert dataclasses.replace(libra, method=baseline, model=base.model) == base
    assert libra.model.base == base.model
    assert libra.model.balanced_pyramid and libra.model.balanced_l1
    assert (libra.model.alpha, libra.model.gamma, libra.model.refine_type) == (0.5, 1.5, "non_local")
    if name == "libra_rcnn":
        assert libra.model.iou_balanced_sampling and libra.model.num_bins == 3 and libra.model.positive_balance
        assert libra.model.beta == 1.0
        # P4's stride: level 2 of P2-P6 (r50), level 1 of the tiny stride-8..64 pyramid
        assert libra.model.refine_level == (1 if preset == "tiny" else 2)
    else:
        assert libra.model.beta == 0.11 and libra.model.refine_level == 1


@pytest.mark.parametrize("name", ["libra_rcnn", "libra_retinanet"])
@pytest.mark.parametrize("preset", ["tiny", "r50_fpn_1x"])
def test_presets_read_back_from_their_json(name, preset):
    cfg = build_preset(name, preset)
    again = train_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and type(again.model.base) is type(cfg.model.base)


@pytest.mark.parametrize("name", ["libra_rcnn", "libra_retinanet"])
@pytest.mark.parametrize("preset", ["tiny", "r50_fpn_1x"])
def test_each_preset_builds(name, preset):
    torch.set_num_threads(1)
    cfg = build_preset(name, preset)
    # no weight files in tests: the same architecture without pretrained weights
    model_cfg = dataclasses.replace(cfg.model, base=dataclasses.replace(cfg.model.base, backbone_weights=None))
    model = get_method(name).build_model(model_cfg, 3)
    pyramid = find_balanced_pyramid(model)
    assert pyramid is not None and pyramid.refine_level == cfg.model.refine_level
    assert pyramid.num_levels == len(model.backbone.feature_names)
    # the refine level has stride 16 (the paper's P4) in every preset
    assert model.backbone.strides[pyramid.refine_level] == 16
    if name == "libra_rcnn":
        sampler = model.roi_heads.stages[0].sampler
        base = cfg.model.base
        assert sampler == IoUBalancedSampler(base.box_batch_size_per_image, base.box_positive_fraction, 3, True)
