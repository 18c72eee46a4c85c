"""IoU-uniform R-CNN: Faster R-CNN whose box offsets and IoU are predicted by a separate head
trained on boxes jittered from the GT with a uniform IoU distribution, and whose detections are
scored by class probability x the IoU predicted on the re-pooled refined box
(``papers/iou-uniform-rcnn.md``). The model is in :mod:`workbench.methods.iou_uniform.model`.

Presets:
- ``tiny``: the baseline's ``tiny`` (the miniature regime) with IoU-uniform R-CNN's box branch;
  nothing else changes (the IoU head has the baseline tiny's 256 features); ``tiny_scaled``:
  the same with 2 generated samples per GT and interval instead of 16 (scaled as the tiny
  baseline's 64 RoIs per image are to 512);
- ``r50_fpn_voc`` / ``r101_fpn_voc``: the paper's Table 1 setting: ResNet-50 / 101-FPN on VOC
  07+12 trainval, evaluated on VOC2007 test, images 1000 x 600, SGD at lr 0.005 for 4 images
  (section 4.1), 12 epochs;
- ``r50_fpn_1x``: the paper's COCO setting: the baseline's ``r50_fpn_1x`` (12 epochs, lr x0.1
  after epochs 8 and 11) with SGD at lr 0.01 for 4 images and gradient clipping at 35.
"""

from __future__ import annotations

import dataclasses

from workbench import records as R
from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.methods import TWO_STAGE_VIEWS, Method, RecordView
from workbench.methods import faster_rcnn as baseline
from workbench.methods.iou_uniform.figures import RUN_FIGURES
from workbench.methods.iou_uniform.model import IOU_PRED, IOU_PRED_FIRST, IoUUniformConfig, build_model
from workbench.modeling import FasterRCNNConfig

#: mmdetection's gradient clipping (``grad_clip=dict(max_norm=35, norm_type=2)``), which the
#: authors' code keeps (section 4.1: "all other hyper-parameters follow the settings in mmdetection").
GRAD_CLIP = 35.0

#: The predicted IoUs of the detections and of every refined RoI as attributes (FiftyOne and
#: hover text), and the refined RoIs as boxes, besides the two-stage views.
RECORD_VIEWS: tuple[RecordView, ...] = (
    RecordView(R.DETECTIONS, "attribute", field=IOU_PRED,
               label="IoU predicted for the refined box, pooled again (the score's second factor)"),
    RecordView(R.DETECTIONS, "attribute", field=IOU_PRED_FIRST,
               label="IoU predicted from the features of the proposal, before refinement"),
    RecordView(R.REFINED_ROIS, "boxes", field="refined_rois", layer="refined RoIs", max_boxes=100,
               box_label="refined RoI",
               label="RPN proposals refined by the IoU head, before the score threshold and NMS "
                     "(in the proposals' order)"),
    RecordView(R.REFINED_ROIS, "attribute", field=IOU_PRED, label="IoU predicted for the re-pooled refined RoI"),
    RecordView(R.REFINED_ROIS, "attribute", field=IOU_PRED_FIRST, label="IoU predicted from the proposal's features"),
)


def tiny() -> TrainConfig:
    """The baseline's ``tiny`` with IoU-uniform R-CNN's box branch; nothing else changes."""
    cfg = baseline.tiny()
    return dataclasses.replace(cfg, method="iou_uniform", model=IoUUniformConfig(base=cfg.model))


def tiny_scaled() -> TrainConfig:
    """:func:`tiny` with the generated samples scaled to the miniature regime as the baseline's
    RoIs were: the tiny baseline samples 64 RoIs per image instead of 512, so 16 x 64 / 512 = 2
    samples per GT and interval. That keeps the paper's proportion of about 200 generated
    samples per image (section 4.4) to 512 sampled RoIs, and the training step near the
    baseline's (``benchmarks/bench_iou_uniform.py --per-interval 2``)."""
    cfg = tiny()
    return dataclasses.replace(cfg, preset="tiny_scaled", model=dataclasses.replace(cfg.model, per_interval=2))


def voc_model(backbone: str = "resnet50_fpn") -> FasterRCNNConfig:
    """The paper's VOC detector (section 4.1, on mmdetection's defaults): an ImageNet ResNet-FPN,
    20 classes, images scaled to 1000 x 600 (mmdetection's VOC ``img_scale``)."""
    return FasterRCNNConfig(backbone=backbone, backbone_weights="IMAGENET1K_V1", num_classes=20,
                            min_size=600, max_size=1000)


def voc_train(preset: str, backbone: str) -> TrainConfig:
    """VOC 07+12 trainval (point ``spec`` at the data; evaluation on VOC2007 test, 11-point
    mAP per epoch), 2 images per process, SGD at lr 0.005 for 4 images (section 4.1: 2 GPUs x 2
    images; Table 7's best), 12 epochs. mmdetection's VOC schedule repeats the data 3 times in
    4 epochs with lr x0.1 after the third: here 12 epochs with lr x0.1 after the ninth."""
    return TrainConfig(
        method="iou_uniform",
        preset=preset,
        model=IoUUniformConfig(base=voc_model(backbone)),
        data=DataConfig(spec="VOCdevkit/VOC2007", train_split="trainval", val_split="test"),
        optimizer=OptimizerConfig(name="sgd", lr=0.005, reference_batch_size=4, momentum=0.9, weight_decay=1e-4,
                                  grad_clip_norm=GRAD_CLIP),
        schedule=ScheduleConfig(epochs=12, warmup_iters=500, warmup_factor=1.0 / 3, decay="step", milestones=(9,)),
        batch_size=2,
        metric="voc07",
    )


def r50_fpn_voc() -> TrainConfig:
    """Table 1, ResNet-50-FPN on VOC2007 test (Faster R-CNN + the method: 55.4 AP, 79.8 AP50)."""
    return voc_train("r50_fpn_voc", "resnet50_fpn")


def r101_fpn_voc() -> TrainConfig:
    """Table 1, ResNet-101-FPN on VOC2007 test (57.6 AP, 81.4 AP50)."""
    return voc_train("r101_fpn_voc", "resnet101_fpn")


def r50_fpn_1x() -> TrainConfig:
    """The baseline's ``r50_fpn_1x`` with the method, SGD at lr 0.01 for 4 images (section 4.1)
    and gradient clipping at 35; Table 2: 39.1 AP on COCO val."""
    cfg = baseline.r50_fpn_1x()
    optimizer = dataclasses.replace(cfg.optimizer, lr=0.01, reference_batch_size=4, grad_clip_norm=GRAD_CLIP)
    return dataclasses.replace(cfg, method="iou_uniform", model=IoUUniformConfig(base=cfg.model), optimizer=optimizer)


METHOD = Method(
    name="iou_uniform",
    paper="IoU-uniform R-CNN: Breaking Through the Limitations of RPN (Zhu et al.)",
    baseline="faster_rcnn",
    description="IoU-uniform R-CNN: a box and IoU head trained on jittered GT boxes of uniform IoU; "
                "scores = class x IoU of the re-pooled refined box",
    model_config_type=IoUUniformConfig,
    build_model=build_model,
    presets={"tiny": tiny, "tiny_scaled": tiny_scaled, "r50_fpn_voc": r50_fpn_voc, "r101_fpn_voc": r101_fpn_voc, "r50_fpn_1x": r50_fpn_1x},
    record_views=(*TWO_STAGE_VIEWS, *RECORD_VIEWS),
    run_figures=RUN_FIGURES,
)

__all__ = ["GRAD_CLIP", "METHOD", "IoUUniformConfig", "r101_fpn_voc", "r50_fpn_1x", "r50_fpn_voc", "tiny",
           "tiny_scaled", "voc_model", "voc_train"]
