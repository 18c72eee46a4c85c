"""SSD, the single-stage baseline of RefineDet (Liu et al., ECCV 2016).

Presets:
- ``ssd300_voc`` / ``ssd512_voc``: VGG-16 (torchvision's ``IMAGENET1K_FEATURES`` weights, the
  Caffe-normalised VGG that torchvision's SSD starts from), the authors' VOC default boxes
  (Caffe ``ssd_pascal.py`` / ``ssd_pascal_512.py``), the SSD training augmentation, and the
  paper's schedule: SGD, lr 1e-3 for a batch of 32, momentum 0.9, weight decay 5e-4, 120k
  iterations with lr x0.1 at 80k and 100k. Expressed in epochs of VOC07+12 trainval (16,551
  images): 120,000 x 32 / 16,551 = 232 epochs, milestones 80,000 x 32 / 16,551 = 154.7 -> 155
  and 100,000 x 32 / 16,551 = 193.3 -> 193. Judged by VOC07 mAP;
- ``tiny``: the miniature regime on RefineDet ``tiny``'s network without what RefineDet adds
  (:func:`tiny_model`). ``tiny`` is the preset that every comparison in the miniature regime
  trains (``benchmarks/compare_refinedet.py``, the pipelines), so it is the one that must share
  RefineDet's backbone, anchors and budget for ``ssd`` against ``refinedet`` to measure the
  anchor refinement, the transfer connections and the negative anchor filtering and nothing
  else; it also puts SSD on the light backbone that the other methods' ``tiny`` presets use;
- ``tiny_vgg16``: SSD's own network shrunk, a VGG-16 with a quarter of the channels, from
  scratch, on 256 px images with five source levels (strides 8..128; AdamW at lr 1e-3); runs on
  the CPU, not tuned for accuracy. It was ``tiny`` before; kept as the paper's architecture at
  CPU scale (the VGG-16 path with its L2 normalisation, fc6 / fc7 and extra layers, and SSD's
  default boxes), which ``tiny`` no longer exercises.
"""

from __future__ import annotations

import dataclasses

from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.methods import SINGLE_STAGE_VIEWS, Method
from workbench.methods.faster_rcnn import TINY_WEIGHTS, miniature, miniature_flip, tiny_backbone
from workbench.modeling.dense import DenseDetector
from workbench.modeling.transform import IMAGENET_MEAN, IMAGENET_STD
from workbench.modeling.ssd import (
    SSD300_VOC_SCALES,
    SSD512_EXTRAS,
    SSD512_RATIOS,
    SSD512_STEPS,
    SSD512_VOC_SCALES,
    SSDConfig,
    build_ssd,
)

#: VOC07+12 trainval images, the unit the paper's iteration schedule is converted with.
VOC0712_TRAIN_IMAGES = 16551


def build_model(cfg: SSDConfig, num_classes: int) -> DenseDetector:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    return build_ssd(dataclasses.replace(cfg, num_classes=num_classes))


def train_transforms(cfg: TrainConfig):
    """The SSD augmentation (photometric distortion, expand onto the mean, min-IoU crop, flip);
    the model resizes to its fixed input size afterwards."""
    from workbench.data.transforms import ssd_train_transform

    fill = tuple(255.0 * m for m in cfg.model.image_mean)
    return ssd_train_transform(None, mean_fill=fill, flip_p=cfg.data.hflip_prob)


def _epochs(iterations: int, batch: int = 32) -> int:
    return round(iterations * batch / VOC0712_TRAIN_IMAGES)


def _voc_schedule() -> tuple[OptimizerConfig, ScheduleConfig]:
    optimizer = OptimizerConfig(name="sgd", lr=1e-3, reference_batch_size=32, momentum=0.9, weight_decay=5e-4)
    schedule = ScheduleConfig(
        epochs=_epochs(120_000), warmup_iters=0, decay="step", milestones=(_epochs(80_000), _epochs(100_000)),
    )
    return optimizer, schedule


def _voc_data() -> DataConfig:
    """Point ``spec`` at a VOC07+12 trainval dataset; evaluation on VOC2007 test."""
    return DataConfig(spec="VOCdevkit/VOC2007", train_split="trainval", val_split="test")


def ssd300_voc() -> TrainConfig:
    optimizer, schedule = _voc_schedule()
    model = SSDConfig(backbone_weights="IMAGENET1K_FEATURES", trainable_backbone_layers=4, num_classes=20,
                      anchor_scales=SSD300_VOC_SCALES)
    return TrainConfig(method="ssd", preset="ssd300_voc", model=model, data=_voc_data(), optimizer=optimizer,
                       schedule=schedule, batch_size=32, metric="voc07")


def ssd512_voc() -> TrainConfig:
    optimizer, schedule = _voc_schedule()
    model = SSDConfig(
        backbone_weights="IMAGENET1K_FEATURES", trainable_backbone_layers=4, num_classes=20, size=512,
        extra_layers=SSD512_EXTRAS, anchor_aspect_ratios=SSD512_RATIOS, anchor_scales=SSD512_VOC_SCALES,
        anchor_steps=SSD512_STEPS,
    )
    return TrainConfig(method="ssd", preset="ssd512_voc", model=model, data=_voc_data(), optimizer=optimizer,
                       schedule=schedule, batch_size=32, metric="voc07")


def tiny_model(weights: str | None = TINY_WEIGHTS) -> SSDConfig:
    """SSD on exactly RefineDet ``tiny``'s backbone, anchors, targets and post-processing
    (:func:`workbench.methods.refinedet.tiny_model`): MobileNetV2-FPN (128 channels, ImageNet
    weights; the stem, the first stages and the batch norm frozen as there; without ``weights``
    everything trains) at strides 8, 16, 32, 64 as the four source levels; 256 px inputs; one
    anchor size per level, 2 x the stride (16..128 px), ratios 1, 2, 1/2 (3 per location); the SSD
    matcher at IoU 0.5 with each GT's best anchor, hard negative mining 3:1, variances 0.1, 0.1,
    0.2, 0.2; at inference the 400 most confident (anchor, class) pairs of the image above 0.01,
    class-wise NMS at 0.45, the best 100.

    The head is SSD's (one 3x3 conv per level for the class scores and one for the offsets), i.e.
    RefineDet's object detection module on the original anchors, reading the backbone levels:
    no anchor refinement module, no transfer connection blocks, no negative anchor filtering.
    The post-processing takes RefineDet's candidate rule (per image, not SSD's 400 per class), so
    that the two differ in the three components only."""
    return SSDConfig(
        **tiny_backbone(weights),
        size=256,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        anchor_sizes=(16.0, 32.0, 64.0, 128.0),
        anchor_steps=(8, 16, 32, 64),
        candidates="per_image",
        detections_per_img=100,
    )


def tiny() -> TrainConfig:
    """The miniature regime of the baseline (its data, AdamW, schedule and batch) with the flip
    alone (:func:`miniature_flip`), as RefineDet's ``tiny``."""
    return miniature_flip("ssd", tiny_model())


def tiny_vgg16_model() -> SSDConfig:
    """A quarter-width VGG-16 SSD at 256 px: source maps 32, 16, 8, 4, 2 (strides 8..128)."""
    return SSDConfig(
        width=0.25,
        size=256,
        extra_layers=((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1)),
        anchor_aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
        anchor_scales=(0.06, 0.12, 0.25, 0.4, 0.6, 0.8),
        anchor_steps=(8, 16, 32, 64, 128),
        # from scratch: unit-scale inputs (the 0..255 scale of SSD_STD suits the Caffe VGG weights)
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        detections_per_img=100,
    )


def tiny_vgg16() -> TrainConfig:
    """The miniature regime of the baseline Faster R-CNN with :func:`tiny_vgg16_model`, with
    AdamW at lr 1e-3 and weight decay 5e-4 for a model trained from scratch."""
    optimizer = OptimizerConfig(name="adamw", lr=1e-3, reference_batch_size=4, weight_decay=5e-4, grad_clip_norm=10.0)
    return dataclasses.replace(miniature("ssd", tiny_vgg16_model(), optimizer), preset="tiny_vgg16")


METHOD = Method(
    name="ssd",
    paper="SSD: Single Shot MultiBox Detector (Liu et al., ECCV 2016)",
    baseline=None,
    description="SSD (VGG-16 with L2-normalised conv4_3, extra layers, hard negative mining; or the light backbone)",
    model_config_type=SSDConfig,
    build_model=build_model,
    presets={"tiny": tiny, "tiny_vgg16": tiny_vgg16, "ssd300_voc": ssd300_voc, "ssd512_voc": ssd512_voc},
    train_transforms=train_transforms,
    record_views=SINGLE_STAGE_VIEWS,
)
