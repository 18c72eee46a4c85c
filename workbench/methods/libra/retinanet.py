"""``libra_retinanet``: RetinaNet with Libra R-CNN's balanced feature pyramid and balanced L1
loss (:mod:`workbench.methods.libra.model`); a dense detector has no RoI sampling.

Presets (each the RetinaNet baseline's preset of the same name with the two components):
- ``tiny``: the miniature regime; its levels are at strides 8..128 like P3-P7, so the refine
  level is 1 (stride 16, P4) as in the paper's configuration;
- ``r50_fpn_1x``: the paper's COCO setting (Table 1, Libra RetinaNet ResNet-50-FPN 1x, 35.8 ->
  37.8 AP): the baseline's ``r50_fpn_1x`` with the balanced pyramid (refine level 1, non-local)
  and balanced L1 (alpha 0.5, gamma 1.5, beta 0.11), as mmdetection's
  ``libra_retinanet_r50_fpn_1x``.
"""

from __future__ import annotations

import dataclasses

from workbench.config import TrainConfig
from workbench.methods import SINGLE_STAGE_VIEWS, Method
from workbench.methods import retinanet as baseline
from workbench.methods.libra.model import LibraRetinaNetConfig, build_retinanet_model


def tiny() -> TrainConfig:
    """The RetinaNet baseline's ``tiny`` with the two components; nothing else changes."""
    cfg = baseline.tiny()
    return dataclasses.replace(cfg, method="libra_retinanet", model=LibraRetinaNetConfig(base=cfg.model))


def r50_fpn_1x() -> TrainConfig:
    """The RetinaNet baseline's ``r50_fpn_1x`` (SGD, lr 0.01 for 16 images, 12 epochs) with the
    two components at the paper's settings."""
    cfg = baseline.r50_fpn_1x()
    return dataclasses.replace(cfg, method="libra_retinanet", model=LibraRetinaNetConfig(base=cfg.model))


METHOD = Method(
    name="libra_retinanet",
    paper="Libra R-CNN: Towards Balanced Learning for Object Detection (Pang et al., CVPR 2019)",
    baseline="retinanet",
    description="Libra RetinaNet: RetinaNet with a balanced feature pyramid and balanced L1",
    model_config_type=LibraRetinaNetConfig,
    build_model=build_retinanet_model,
    presets={"tiny": tiny, "r50_fpn_1x": r50_fpn_1x},
    record_views=SINGLE_STAGE_VIEWS,
)

__all__ = ["METHOD", "r50_fpn_1x", "tiny"]
