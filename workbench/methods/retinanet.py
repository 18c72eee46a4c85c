"""RetinaNet, the single-stage baseline of Libra RetinaNet (Lin et al., ICCV 2017).

Presets:
- ``tiny``: MobileNetV2-FPN (ImageNet weights, frozen batch norm) over the stride 8..32 stages
  plus P6 / P7, 128 channels, two convolutions per subnet, 256 px images, AdamW; trains on the
  CPU in minutes on ``builtin:shapes``;
- ``r50_fpn_1x``: ResNet-50-FPN P3-P7 with ImageNet weights, the COCO 1x schedule of
  Detectron2's ``retinanet_R_50_FPN_1x`` (SGD, lr 0.01 for 16 images, momentum 0.9, weight
  decay 1e-4, 1,000 warm-up iterations, 90k iterations = 12 epochs of COCO train2017 with lr
  x0.1 after epochs 8 and 11), shortest side 800, longest at most 1333.
"""

from __future__ import annotations

import dataclasses

from workbench.config import TrainConfig
from workbench.methods import SINGLE_STAGE_VIEWS, Method
from workbench.methods.faster_rcnn import coco_1x, miniature
from workbench.modeling.dense import DenseDetector
from workbench.modeling.retinanet import RetinaNetConfig, build_retinanet, retinanet_anchor_sizes


def build_model(cfg: RetinaNetConfig, num_classes: int) -> DenseDetector:
    """``num_classes`` counts the foreground classes of the dataset."""
    return build_retinanet(dataclasses.replace(cfg, num_classes=num_classes))


def tiny_model(weights: str | None = "IMAGENET1K_V1") -> RetinaNetConfig:
    """RetinaNet sized for 256 px images with objects of 10-150 px: levels at strides 8..128
    with base anchor sizes 16..256 (three octave scales, three ratios). Without ``weights`` the
    batch norm trains (frozen statistics of random weights do not normalise)."""
    return RetinaNetConfig(
        backbone="mobilenet_v2_fpn",
        backbone_weights=weights,
        trainable_backbone_layers=6,
        backbone_norm="frozen_bn" if weights is not None else "bn",
        backbone_returned_layers=(2, 3, 4),
        fpn_channels=128,
        min_size=256,
        max_size=256,
        anchor_sizes=retinanet_anchor_sizes((16, 32, 64, 128, 256)),
        head_num_convs=2,
        topk_candidates=500,
        detections_per_img=100,
    )


def tiny() -> TrainConfig:
    """The miniature regime of the baseline Faster R-CNN (its data, AdamW, schedule and batch)."""
    return miniature("retinanet", tiny_model())


def r50_fpn_1x() -> TrainConfig:
    return coco_1x("retinanet", RetinaNetConfig(backbone_weights="IMAGENET1K_V1"), lr=0.01, warmup_iters=1000)


METHOD = Method(
    name="retinanet",
    paper="Focal Loss for Dense Object Detection (Lin et al., ICCV 2017)",
    baseline=None,
    description="RetinaNet (ResNet-FPN P3-P7, focal loss), a single-stage baseline",
    model_config_type=RetinaNetConfig,
    build_model=build_model,
    presets={"tiny": tiny, "r50_fpn_1x": r50_fpn_1x},
    record_views=SINGLE_STAGE_VIEWS,
)
