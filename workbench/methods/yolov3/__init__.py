"""YOLOv3-style single-stage detector, the base of the uncertainty-rescaling paper
(``papers/uncertainty-loss-rescaling.md``: Darknet-53, VOC 07+12, 608 x 608 with zero padding,
HSV distortion, random crop and flip; baseline 76.62 VOC07 mAP).

Modules: :mod:`~.networks` (Darknet-53, the neck, the head), :mod:`~.coding` (anchors, box
coding), :mod:`~.assignment`, :mod:`~.losses`, :mod:`~.model` (config, detector, builder,
post-processing), :mod:`~.transforms` (the augmentation).

Presets:

- ``darknet53_608_voc``: the paper's setting. The slides give no schedule; this takes darknet's
  own VOC schedule for YOLOv3 (``yolov3-voc.cfg``, the recipe a darknet-trained VOC baseline of
  76.6 mAP most plausibly used): SGD, lr 1e-3 for a batch of 64 (darknet divides the summed
  gradient by the batch, as the per-image mean here), momentum 0.9, weight decay 5e-4, a
  1,000-iteration warm-up ("burn_in"), 50,200 iterations with lr x0.1 at 40,000 and 45,000.
  In epochs of VOC07+12 trainval (16,551 images): 50,200 x 64 / 16,551 = 194, milestones
  40,000 x 64 / 16,551 = 154.7 -> 155 and 45,000 x 64 / 16,551 = 174.0 -> 174. Darknet-53
  starts from random weights unless ``backbone_weights`` names a local file of ImageNet weights
  (torchvision ships none). Judged by VOC07 11-point mAP;
- ``tiny``: the miniature regime with the flip as the only augmentation
  (``workbench.methods.faster_rcnn.miniature_flip``, as SSD's and RefineDet's ``tiny``:
  ``builtin:shapes``, AdamW, 3 epochs, cosine): MobileNetV2 with ImageNet weights and frozen
  batch norm over strides 8, 16, 32 (the last inverted residual at 32, see
  :func:`~workbench.methods.yolov3.model.mobilenet_v2_body`) under a quarter-width YOLOv3 neck,
  256 px input.
"""

from __future__ import annotations

from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.methods import SINGLE_STAGE_VIEWS, Method
from workbench.methods.faster_rcnn import TINY_WEIGHTS, miniature_flip, tiny_backbone_training
from workbench.methods.yolov3.model import YOLOv3Config, YOLOv3Detector, build_yolov3, with_classes
from workbench.methods.yolov3.transforms import yolo_train_transform

#: VOC07+12 trainval images, the unit the darknet iteration schedule is converted with.
VOC0712_TRAIN_IMAGES = 16551


def build_model(cfg: YOLOv3Config, num_classes: int) -> YOLOv3Detector:
    """``num_classes`` counts the foreground classes of the dataset."""
    return build_yolov3(with_classes(cfg, num_classes))


def train_transforms(cfg: TrainConfig):
    """HSV distortion, jitter crop, flip (``cfg.data.hflip_prob``); the model letterboxes."""
    return yolo_train_transform(flip_p=cfg.data.hflip_prob)


def _epochs(iterations: int, batch: int = 64) -> int:
    return round(iterations * batch / VOC0712_TRAIN_IMAGES)


def darknet53_608_voc() -> TrainConfig:
    return TrainConfig(
        method="yolov3",
        preset="darknet53_608_voc",
        model=YOLOv3Config(num_classes=20, size=608),
        data=DataConfig(spec="VOCdevkit/VOC2007", train_split="trainval", val_split="test"),
        optimizer=OptimizerConfig(name="sgd", lr=1e-3, reference_batch_size=64, momentum=0.9, weight_decay=5e-4),
        schedule=ScheduleConfig(epochs=_epochs(50_200), warmup_iters=1000, warmup_factor=1e-3, decay="step",
                                milestones=(_epochs(40_000), _epochs(45_000))),
        batch_size=16,
        metric="voc07",
    )


def tiny_model(weights: str | None = TINY_WEIGHTS) -> YOLOv3Config:
    """YOLOv3 sized for 256 px images with objects of 10-150 px, with the nine standard anchors:
    they fit the built-in training boxes (3,625, seed 0) about as well as YOLOv2 reports its
    nine k-means clusters fit COCO's (mean best-shape IoU 0.672 against 67.2, 98.6 % of the
    boxes above 0.5; the 373 x 326 shape is never the best). k-means with the 1 - IoU distance
    on these boxes reaches 0.830 with nine near-square shapes of 12 to 121 px; the standard
    shapes are kept so that the preset stays the paper's detector."""
    return YOLOv3Config(
        backbone="mobilenet_v2",
        **tiny_backbone_training(weights),
        mobilenet_top="bottleneck",
        neck_channels=(32, 64, 128),
        size=256,
    )


def tiny() -> TrainConfig:
    """The miniature regime of the baseline (its data, AdamW, schedule and batch) with the flip
    as the only augmentation (:func:`~workbench.methods.faster_rcnn.miniature_flip`), as the
    other single-stage ``tiny`` presets."""
    return miniature_flip("yolov3", tiny_model())


METHOD = Method(
    name="yolov3",
    paper="YOLOv3: An Incremental Improvement (Redmon and Farhadi, arXiv 2018)",
    baseline=None,
    description="YOLOv3-style detector (Darknet-53, three scales, shape assignment at the centre cell)",
    model_config_type=YOLOv3Config,
    build_model=build_model,
    presets={"tiny": tiny, "darknet53_608_voc": darknet53_608_voc},
    train_transforms=train_transforms,
    record_views=SINGLE_STAGE_VIEWS,
)

__all__ = ["METHOD", "YOLOv3Config", "build_model", "darknet53_608_voc", "tiny", "tiny_model", "train_transforms"]
