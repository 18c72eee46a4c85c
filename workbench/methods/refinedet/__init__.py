"""RefineDet: SSD with an anchor refinement module, transfer connection blocks and an object
detection module on the refined anchors (``papers/refinedet.md``; Zhang et al., CVPR 2018).
The model is in :mod:`workbench.methods.refinedet.model`.

Presets:
- ``tiny``: the miniature regime (:func:`workbench.methods.faster_rcnn.miniature`: the built-in
  shapes at 256 px, batch 4, AdamW at lr 3e-4, 3 epochs, cosine, the flip as the only
  augmentation) with its light backbone
  (MobileNetV2-FPN with ImageNet weights over strides 8..64) and anchors of 2 x the stride
  (16..128 px, the miniature regime's anchor sizes; the paper's 4 x stride suits 320 px inputs
  with larger objects);
- ``vgg16_320_voc`` / ``vgg16_512_voc``: VGG-16 (torchvision's Caffe-normalised
  ``IMAGENET1K_FEATURES``), VOC07+12 trainval, the SSD augmentation, SGD momentum 0.9, weight
  decay 5e-4, lr 1e-3 for batch 32, the 120k-iteration schedule with steps at 80k and 100k
  (as SSD's VOC presets, in epochs of VOC07+12); judged by VOC07 11-point mAP (paper: 80.0 and
  81.8);
- ``vgg16_320_coco`` / ``vgg16_512_coco`` / ``r101_320_coco``: COCO (train2017, the paper's
  trainval35k), batch 32, lr 1e-3 for 280k iterations, then 1e-4 for 80k and 1e-5 for 40k
  (the original paper, section 4.2), in epochs of train2017.

Trace records (names in :mod:`workbench.records`), per image, boxes in original-image pixels:

- ``anchors`` (:data:`~workbench.records.ANCHORS`): ``boxes`` (A, 4), ``levels`` (A,): the same
  tensor for every image of one size, so saved traces hold it once;
- :data:`~workbench.records.REFINED_ANCHORS`: per anchor, in the anchors' order: ``boxes``
  (A, 4) float16, the ARM's refined box; ``scores`` (A,) float16, its object probability;
  ``filtered`` (A,) bool, the negative-anchor-filter mask;
- :data:`~workbench.records.TOP_REFINED_ANCHORS`: the ``trace_top_anchors`` most object-like
  refined anchors, best first: ``boxes``, ``scores``, ``anchor_index``;
- :data:`~workbench.records.FINAL_CANDIDATES`: the ODM's candidates entering NMS (``boxes``,
  ``scores``, ``labels``, ``levels``, ``anchor_index``); :data:`~workbench.records.FINAL_NMS`:
  the ledger of the class-wise NMS;
- :data:`~workbench.records.DETECTIONS`: ``boxes``, ``scores``, ``labels`` and per detection
  ``anchor_index`` (the anchor it came from), ``anchor_iou_before`` (IoU of its box with that
  anchor) and ``anchor_iou_after`` (with its refined anchor);
- :data:`~workbench.records.DETECTION_ANCHORS`: per detection, in the same order, its refined
  anchor (``boxes``), ``scores``, ``labels``, ``anchor_index``;
- :data:`~workbench.records.FILTERED_ANCHOR_MAP`: a map record: ``share_level<k>`` (the share
  of level ``k``'s anchors filtered at each of its locations, at that level's resolution, with
  its cell ``cell_size_share_level<k>``), ``share`` (their mean over the levels on the finest
  level's grid, whose cell is ``cell_size``), float16.

:data:`RECORD_VIEWS` declares how they are shown (figures and FiftyOne fields).
"""

from __future__ import annotations

import dataclasses

from workbench import records as R
from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.methods import SINGLE_STAGE_VIEWS, Method, RecordView
from workbench.methods.faster_rcnn import TINY_WEIGHTS, tiny_backbone
from workbench.methods.refinedet.figures import RUN_FIGURES
from workbench.methods.refinedet.model import RefineDet, RefineDetConfig, build_refinedet
from workbench.methods.faster_rcnn import miniature_flip
from workbench.methods.ssd import _voc_data, _voc_schedule, train_transforms
from workbench.modeling.transform import IMAGENET_MEAN, IMAGENET_STD

#: COCO train2017 images (the paper's trainval35k), the unit the COCO schedule is converted with.
COCO_TRAIN_IMAGES = 118287


def build_model(cfg: RefineDetConfig, num_classes: int) -> RefineDet:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    return build_refinedet(dataclasses.replace(cfg, num_classes=num_classes))


def tiny_model(weights: str | None = TINY_WEIGHTS) -> RefineDetConfig:
    """RefineDet in the miniature regime: MobileNetV2-FPN (128 channels) at strides 8..64 as the
    four source levels, 128-channel transfer connections, 256 px inputs, anchors 16..128 px.
    With ``weights`` the stem and the first stages and the batch norm stay frozen (as the
    baseline's ``tiny``); without, everything trains."""
    return RefineDetConfig(
        **tiny_backbone(weights),
        tcb_channels=128,
        size=256,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        anchor_sizes=(16.0, 32.0, 64.0, 128.0),
        detections_per_img=100,
    )


def tiny() -> TrainConfig:
    """The miniature regime of the baseline (its data, AdamW, schedule and batch, the flip as the
    only augmentation: :func:`workbench.methods.faster_rcnn.miniature_flip`)."""
    return miniature_flip("refinedet", tiny_model())


def _vgg16(size: int, num_classes: int) -> RefineDetConfig:
    return RefineDetConfig(backbone="vgg16", backbone_weights="IMAGENET1K_FEATURES", trainable_backbone_layers=4,
                           num_classes=num_classes, size=size)


def _voc(size: int) -> TrainConfig:
    optimizer, schedule = _voc_schedule()
    return TrainConfig(method="refinedet", preset=f"vgg16_{size}_voc", model=_vgg16(size, 20), data=_voc_data(),
                       optimizer=optimizer, schedule=schedule, batch_size=32, metric="voc07")


def vgg16_320_voc() -> TrainConfig:
    return _voc(320)


def vgg16_512_voc() -> TrainConfig:
    return _voc(512)


def _coco_epochs(iterations: int, batch: int = 32) -> int:
    return round(iterations * batch / COCO_TRAIN_IMAGES)


def _coco(preset: str, model: RefineDetConfig) -> TrainConfig:
    return TrainConfig(
        method="refinedet",
        preset=preset,
        model=model,
        data=DataConfig(spec="data/coco", train_split="train2017", val_split="val2017"),
        optimizer=OptimizerConfig(name="sgd", lr=1e-3, reference_batch_size=32, momentum=0.9, weight_decay=5e-4),
        schedule=ScheduleConfig(epochs=_coco_epochs(400_000), warmup_iters=0, decay="step",
                                milestones=(_coco_epochs(280_000), _coco_epochs(360_000))),
        batch_size=32,
    )


def vgg16_320_coco() -> TrainConfig:
    return _coco("vgg16_320_coco", _vgg16(320, 80))


def vgg16_512_coco() -> TrainConfig:
    return _coco("vgg16_512_coco", _vgg16(512, 80))


def r101_320_coco() -> TrainConfig:
    """ResNet-101 (torchvision ImageNet weights, frozen batch norm, stem and first stage frozen)
    with the extra block res6; ImageNet normalisation."""
    model = RefineDetConfig(backbone="resnet101", backbone_weights="IMAGENET1K_V1", trainable_backbone_layers=3,
                            num_classes=80, size=320, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return _coco("r101_320_coco", model)


#: How RefineDet's own records are shown, besides the single-stage ones (detections and the boxes
#: the final NMS suppressed).
RECORD_VIEWS: tuple[RecordView, ...] = (
    RecordView(R.TOP_REFINED_ANCHORS, "boxes", field="refined_anchors", layer="refined anchors",
               label="the most object-like refined anchors (confidence: the ARM's object probability)",
               box_label="refined anchor"),
    RecordView(R.DETECTION_ANCHORS, "boxes", field="detection_anchors", layer="refined anchors of the detections",
               label="the refined anchor each of the top detections came from", max_boxes=20),
    RecordView(R.FILTERED_ANCHOR_MAP, "heatmap", field="filtered_anchors", value="share", layer="filtered anchors",
               label="share of the anchors filtered as easy background at each location, over the levels",
               higher="more anchors filtered", shown=True),
    *(RecordView(R.FILTERED_ANCHOR_MAP, "heatmap", field=f"filtered_anchors_level{k}", value=f"share_level{k}",
                 layer=f"filtered anchors, level {k}", higher="more anchors filtered", app=False,
                 label=f"share of the level-{k} anchors (stride {8 * 2 ** k}) filtered at each location")
      for k in range(4)),
    RecordView(R.DETECTIONS, "attribute", field="anchor_iou_before",
               label="IoU of the detection with the anchor it came from"),
    RecordView(R.DETECTIONS, "attribute", field="anchor_iou_after",
               label="IoU of the detection with its refined anchor (the ODM's reference)"),
    RecordView(R.DETECTIONS, "attribute", field="anchor_index", label="index of the anchor the detection came from"),
)

METHOD = Method(
    name="refinedet",
    paper="Single-Shot Refinement Neural Network for Object Detection (Zhang et al., CVPR 2018)",
    baseline="ssd",
    description="RefineDet (anchor refinement module, transfer connections, detection on refined anchors)",
    model_config_type=RefineDetConfig,
    build_model=build_model,
    presets={
        "tiny": tiny,
        "vgg16_320_voc": vgg16_320_voc,
        "vgg16_512_voc": vgg16_512_voc,
        "vgg16_320_coco": vgg16_320_coco,
        "vgg16_512_coco": vgg16_512_coco,
        "r101_320_coco": r101_320_coco,
    },
    train_transforms=train_transforms,
    record_views=(*SINGLE_STAGE_VIEWS, *RECORD_VIEWS),
    run_figures=RUN_FIGURES,
)

__all__ = ["METHOD", "RECORD_VIEWS", "RefineDetConfig", "build_model", "tiny", "tiny_model"]
