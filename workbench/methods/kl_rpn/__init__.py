"""KL-RPN: Faster R-CNN whose RPN predicts a Gaussian per box offset and scores anchors by the
predicted uncertainty (``papers/kl-rpn.md``). The model, builder and config reuse the baseline's
(:mod:`workbench.methods.kl_rpn.model`); analysis helpers live in
:mod:`~workbench.methods.kl_rpn.analysis` and :mod:`~workbench.methods.kl_rpn.uncertainty`.

Presets:
- ``tiny``: the baseline's ``tiny`` (the miniature regime) with KL-RPN's head and loss;
- ``vgg16_coco``: the paper's COCO setting (Table 1): the VGG-16 Faster R-CNN of
  jwyang/faster-rcnn.pytorch (the paper's baseline [15]), short side 600, RoIAlign, Adam with
  lr 6e-5 for batch 16, top 1000 proposals at test time;
- ``r50_fpn_1x``: the baseline's ``r50_fpn_1x`` model with KL-RPN, trained with Adam.
"""

from __future__ import annotations

import dataclasses

from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.methods import TWO_STAGE_VIEWS, Method
from workbench.methods import faster_rcnn as baseline
from workbench.methods.kl_rpn.figures import RUN_FIGURES
from workbench.methods.kl_rpn.model import KLRPNConfig, build_model
from workbench.methods.kl_rpn.uncertainty import RECORD_VIEWS
from workbench.modeling import FasterRCNNConfig

#: Adam's (beta1, beta2) in the paper (section 3.1).
ADAM_BETAS = (0.9, 0.999)


def kl_model(base: FasterRCNNConfig) -> KLRPNConfig:
    """KL-RPN on a baseline model config; proposals are not thresholded by score (the baseline's
    threshold 0.0 applies to a sigmoid, KL-RPN scores are log objectness)."""
    return KLRPNConfig(base=dataclasses.replace(base, rpn_score_thresh=None))


def tiny() -> TrainConfig:
    """The baseline's ``tiny`` (the miniature regime) with KL-RPN's head and loss; nothing else
    changes, the optimiser included (the baseline's AdamW at lr 3e-4 for batch 4).

    The paper switched to Adam because SGD diverged (section 3.1); the miniature regime trains
    the baseline with AdamW too, so the comparison measures the RPN, not the optimiser (over
    three seeds, the old SGD baseline against Adam had made most of KL-RPN's apparent gain:
    docs/benchmarks.md, "KL-RPN against the baseline RPN").
    """
    cfg = baseline.tiny()
    return dataclasses.replace(cfg, method="kl_rpn", model=kl_model(cfg.model))


def vgg16_coco_base() -> FasterRCNNConfig:
    """The paper's baseline [15] (jwyang/faster-rcnn.pytorch, VGG-16, COCO) in workbench terms.

    From its ``lib/model/utils/config.py`` and ``trainval_net.py``: short side 600, long side at
    most 1000; one stride-16 level with anchors 64-512 (``ANCHOR_SCALES [4, 8, 16, 32]`` for
    COCO) and ratios 0.5, 1, 2; RPN 0.7 / 0.3, 256 anchors, half positive, NMS 0.7, 12000 / 2000
    boxes before / after NMS in training; 128 RoIs per image, a quarter foreground; conv1-conv2
    frozen; 4096-d fc6 / fc7; box NMS 0.3 at test time. From the paper (Table 1): RoIAlign and
    the top 1000 proposals at test time. ImageNet weights (section 3); give a local file path in
    ``backbone_weights`` where they cannot be downloaded.
    """
    return FasterRCNNConfig(
        backbone="vgg16",
        backbone_weights="IMAGENET1K_V1",
        trainable_backbone_layers=3,
        num_classes=80,
        min_size=600,
        max_size=1000,
        anchor_sizes=((64.0, 128.0, 256.0, 512.0),),
        anchor_aspect_ratios=(0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=1000,
        rpn_nms_thresh=0.7,
        roi_output_size=7,
        box_representation_size=4096,
        box_batch_size_per_image=128,
        box_positive_fraction=0.25,
        box_nms_thresh=0.3,
    )


def vgg16_coco() -> TrainConfig:
    """Paper Table 1, Faster R-CNN VGG-16 with KL-RPN: Adam (0.9, 0.999), lr 6e-5 for batch 16,
    no gradient clipping (section 3.1). The paper gives no schedule; this uses its baseline's
    COCO one (jwyang README: 6 epochs, lr x0.1 after epoch 4) and its weight decay 5e-4."""
    return TrainConfig(
        method="kl_rpn",
        preset="vgg16_coco",
        model=kl_model(vgg16_coco_base()),
        # COCO 2017 train / val are the paper's trainval35k / minival; pass --data COCO_ROOT
        data=DataConfig(spec="data/coco", train_split="train2017", val_split="val2017"),
        optimizer=OptimizerConfig(
            name="adam", lr=6e-5, reference_batch_size=16, betas=ADAM_BETAS, weight_decay=5e-4, grad_clip_norm=None
        ),
        schedule=ScheduleConfig(epochs=6, warmup_iters=0, decay="step", milestones=(4,)),
        batch_size=2,
    )


def r50_fpn_1x() -> TrainConfig:
    """The baseline's ``r50_fpn_1x`` (1x schedule, 800 / 1333) with KL-RPN and Adam; the lr is
    the paper's VGG-16 COCO one (6e-5 for 16 images), the only Adam lr it gives for batch 16."""
    cfg = baseline.r50_fpn_1x()
    return dataclasses.replace(
        cfg,
        method="kl_rpn",
        model=kl_model(cfg.model),
        optimizer=OptimizerConfig(name="adam", lr=6e-5, reference_batch_size=16, betas=ADAM_BETAS, weight_decay=1e-4),
    )


METHOD = Method(
    name="kl_rpn",
    paper="KL-Divergence-Based Region Proposal Network for Object Detection (Seo et al., ICIP 2020)",
    baseline="faster_rcnn",
    description="KL-RPN: RPN trained by KL divergence, objectness from the predicted offset uncertainty",
    model_config_type=KLRPNConfig,
    build_model=build_model,
    presets={"tiny": tiny, "vgg16_coco": vgg16_coco, "r50_fpn_1x": r50_fpn_1x},
    record_views=(*TWO_STAGE_VIEWS, *RECORD_VIEWS),
    run_figures=RUN_FIGURES,
)

__all__ = ["METHOD", "KLRPNConfig", "kl_model", "r50_fpn_1x", "tiny", "vgg16_coco", "vgg16_coco_base"]
