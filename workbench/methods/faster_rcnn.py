"""The baseline: Faster R-CNN with an FPN (or a single-level VGG-16) backbone.

Presets:
- ``tiny``: ResNet-18-FPN from scratch on small images; trains on CPU in minutes;
- ``r50_fpn_1x``: the standard COCO 1x schedule (SGD, lr 0.02 for 16 images, momentum 0.9,
  weight decay 1e-4, linear warm-up over 500 iterations, lr x0.1 after epochs 8 and 11 of 12,
  shortest side 800, longest at most 1333), as in torchvision's and detectron2's references.
"""

from __future__ import annotations

import dataclasses

from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.methods import Method
from workbench.modeling import FasterRCNN, FasterRCNNConfig, build_faster_rcnn


def build_model(cfg: FasterRCNNConfig, num_classes: int) -> FasterRCNN:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    return build_faster_rcnn(dataclasses.replace(cfg, num_classes=num_classes))


def tiny_model() -> FasterRCNNConfig:
    return FasterRCNNConfig(
        backbone="resnet18_fpn",
        trainable_backbone_layers=5,
        backbone_norm="bn",  # from scratch: frozen statistics of random weights do not normalise
        backbone_returned_layers=(2, 3, 4),  # strides 8..64: no stride-4 level, 3x cheaper on CPU
        fpn_channels=128,
        min_size=256,
        max_size=256,
        anchor_sizes=((16.0,), (32.0,), (64.0,), (128.0,)),
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=128,
        box_representation_size=512,
    )


def tiny() -> TrainConfig:
    return TrainConfig(
        method="faster_rcnn",
        preset="tiny",
        model=tiny_model(),
        data=DataConfig(spec="builtin:shapes"),
        optimizer=OptimizerConfig(name="sgd", lr=0.02, reference_batch_size=4, momentum=0.9, weight_decay=1e-4,
                                  grad_clip_norm=10.0),
        schedule=ScheduleConfig(epochs=6, warmup_iters=100, warmup_factor=1e-3, decay="cosine"),
        batch_size=4,
        log_every_steps=20,
    )


def r50_fpn_1x() -> TrainConfig:
    return TrainConfig(
        method="faster_rcnn",
        preset="r50_fpn_1x",
        model=FasterRCNNConfig(),
        optimizer=OptimizerConfig(name="sgd", lr=0.02, reference_batch_size=16, momentum=0.9, weight_decay=1e-4),
        schedule=ScheduleConfig(epochs=12, warmup_iters=500, warmup_factor=1e-3, decay="step", milestones=(8, 11)),
        batch_size=2,
    )


METHOD = Method(
    name="faster_rcnn",
    description="Faster R-CNN (RPN + RoIAlign box head), the two-stage baseline",
    model_config_type=FasterRCNNConfig,
    build_model=build_model,
    presets={"tiny": tiny, "r50_fpn_1x": r50_fpn_1x},
)
