"""``libra_rcnn``: Faster R-CNN with Libra R-CNN's IoU-balanced sampling, balanced feature
pyramid and balanced L1 loss (:mod:`workbench.methods.libra.model`).

Presets (each the baseline's preset of the same name with the three components added):
- ``tiny``: the miniature regime. Its pyramid is the baseline tiny's stride 8, 16, 32, 64
  levels, so the refine level is 1: stride 16, the stride of the paper's refine level P4
  (level 2 of P2-P6);
- ``r50_fpn_1x``: the paper's COCO setting (Table 1, ResNet-50-FPN, 1x schedule): the
  baseline's ``r50_fpn_1x`` with every component at the paper's setting (K = 3 with
  instance-balanced positives; refine level 2 with a non-local block; balanced L1 with
  alpha 0.5, gamma 1.5, beta 1.0), as mmdetection's ``libra_faster_rcnn_r50_fpn_1x``.
"""

from __future__ import annotations

import dataclasses

from workbench.config import TrainConfig
from workbench.methods import TWO_STAGE_VIEWS, Method
from workbench.methods import faster_rcnn as baseline
from workbench.methods.libra.model import LibraRCNNConfig, build_rcnn_model

#: The tiny pyramid's level with the stride (16) of the paper's refine level P4.
TINY_REFINE_LEVEL = 1


def tiny() -> TrainConfig:
    """The baseline's ``tiny`` with the three components; data, schedule and optimiser unchanged."""
    cfg = baseline.tiny()
    return dataclasses.replace(
        cfg, method="libra_rcnn", model=LibraRCNNConfig(base=cfg.model, refine_level=TINY_REFINE_LEVEL)
    )


def r50_fpn_1x() -> TrainConfig:
    """The baseline's ``r50_fpn_1x`` (SGD, lr 0.02 for 16 images, 12 epochs, steps after 8 and
    11, 800 / 1333) with the three components at the paper's settings."""
    cfg = baseline.r50_fpn_1x()
    return dataclasses.replace(cfg, method="libra_rcnn", model=LibraRCNNConfig(base=cfg.model))


METHOD = Method(
    name="libra_rcnn",
    paper="Libra R-CNN: Towards Balanced Learning for Object Detection (Pang et al., CVPR 2019)",
    baseline="faster_rcnn",
    description="Libra R-CNN: Faster R-CNN with IoU-balanced sampling, a balanced feature pyramid and balanced L1",
    model_config_type=LibraRCNNConfig,
    build_model=build_rcnn_model,
    presets={"tiny": tiny, "r50_fpn_1x": r50_fpn_1x},
    record_views=TWO_STAGE_VIEWS,
)

__all__ = ["METHOD", "TINY_REFINE_LEVEL", "r50_fpn_1x", "tiny"]
