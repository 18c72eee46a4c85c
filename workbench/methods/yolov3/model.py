"""The YOLOv3-style detector on the dense assembly: config, builder, assignment step and
post-processing.

What differs from the RetinaNet / SSD assembly (:class:`workbench.modeling.DenseDetector`) is
only the training-target step: YOLOv3 assigns each GT to one anchor by shape at its centre
cell, ignores negatives by the IoU of their *predicted* boxes, and codes boxes relative to the
cell (sigmoid offsets, stride-dependent). :class:`YOLOv3Detector` replaces that step; the
forward pass, the trace and the final NMS through the ledger are the assembly's.

Input: letterbox, the longer side resized to ``size`` (608; 416 and 320 as options) keeping
the aspect ratio, zero-padded at the bottom and right to ``size x size`` (zero after
normalisation: the mean colour). Post-processing: the score of an (anchor, class) pair is
``sigmoid(obj) sigmoid(cls)`` (YOLOv3's class-specific confidence); pairs above
``score_thresh``, the ``topk_candidates`` best, decoded and clipped to the image, class-wise
NMS at ``nms_thresh`` (0.45, darknet's) through the ledger, the ``detections_per_img`` best.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from workbench.errors import ConfigError
from workbench.losses import binary_cross_entropy_with_logits, sigmoid_focal_loss
from workbench.losses.anchor import binary_anchor_loss
from workbench.methods.yolov3.assignment import assign
from workbench.methods.yolov3.coding import (
    WH_CLAMP,
    YOLOAnchors,
    YOLOV3_ANCHORS,
    anchor_strides,
    decode,
    encode,
    shapes_per_level,
)
from workbench.methods.yolov3.losses import ObjectnessLoss, YOLOLoss, YOLOTargets
from workbench.methods.yolov3.networks import Darknet53, YOLOv3Backbone, YOLOv3Head
from workbench.modeling.backbones import build_backbone, mobilenet_v2_stage_blocks
from workbench.modeling.dense import AllAnchors, DenseDetector, _CandidatesThenNMS, top_pairs_per_image
from workbench.modeling.rpn import level_ids
from workbench.modeling.transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from workbench.ops import clip_boxes

OBJECTNESS_LOSSES = ("bce", "focal", "anchor")


@dataclass(frozen=True)
class YOLOv3Config:
    """Every setting of the YOLOv3-style detector (defaults: the paper's Darknet-53 at 608)."""

    backbone: str = "darknet53"  # darknet53 | mobilenet_v2
    #: darknet53: None (random) or a local .pth of the body's state dict; mobilenet_v2: a
    #: torchvision weights name or file (see workbench.modeling.backbones)
    backbone_weights: str | None = None
    darknet_width: float = 1.0
    trainable_backbone_layers: int = 6  # mobilenet_v2 only
    backbone_norm: str = "bn"  # mobilenet_v2 only: frozen_bn | bn
    #: mobilenet_v2 only, the stride-32 output (:func:`mobilenet_v2_body`): ``bottleneck`` (the
    #: ``tiny`` preset's) | ``expansion`` (the default, so that runs saved before the choice
    #: existed load as they were trained)
    mobilenet_top: str = "expansion"
    neck_channels: tuple[int, int, int] = (128, 256, 512)  # strides 8, 16, 32
    num_classes: int = 20
    size: int = 608  # letterbox input side (416, 320 as options)
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    anchors: tuple[tuple[float, float], ...] = YOLOV3_ANCHORS  # (w, h), smallest first, 3 per level
    obj_prior: float = 0.01
    # training targets and loss
    ignore_thresh: float = 0.5
    objectness_loss: str = "bce"  # bce | focal | anchor
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    anchor_loss_gamma: float = 0.5
    obj_loss_weight: float = 1.0
    cls_loss_weight: float = 1.0
    box_loss_weight: float = 1.0
    # post-processing
    score_thresh: float = 0.005
    topk_candidates: int = 1000
    nms_thresh: float = 0.45
    detections_per_img: int = 100
    wh_clamp: float = WH_CLAMP


def anchor_shape_index(anchors: Tensor, shapes: Tensor) -> Tensor:
    """``(A,)`` the index of each anchor's ``(w, h)`` among ``shapes`` (S, 2) (the nearest in
    log size, so float rounding of the corners does not matter)."""
    wh = (anchors[:, 2:] - anchors[:, :2]).clamp(min=1e-6).log()
    return (wh[:, None] - shapes.log()[None]).abs().sum(dim=-1).argmin(dim=1)


class YOLOv3Detector(DenseDetector):
    """The dense assembly with YOLOv3's training-target step (module docstring).

    Args beyond the assembly's parts: ``strides`` of the levels, ``ignore_thresh``, and
    ``box_scale_size`` (the network-input side that the ``2 - w h`` weight measures sizes by)."""

    def __init__(
        self,
        transform: nn.Module,
        backbone: nn.Module,
        head: nn.Module,
        anchor_generator: YOLOAnchors,
        *,
        strides: Sequence[int],
        loss: YOLOLoss,
        postprocess: "YOLOPostprocess",
        ignore_thresh: float = 0.5,
        box_scale_size: float = 608.0,
        clamp: float = WH_CLAMP,
    ) -> None:
        super().__init__(transform, backbone, head, anchor_generator, box_coder=None, matcher=None,
                         sampler=AllAnchors(), loss=loss, postprocess=postprocess)
        self.strides = tuple(int(s) for s in strides)
        self.ignore_thresh = float(ignore_thresh)
        self.box_scale_size = float(box_scale_size)
        self.clamp = float(clamp)
        self.register_buffer("shapes", torch.tensor([s for level in anchor_generator.shapes for s in level]),
                             persistent=False)
        self.anchors_per_level = len(anchor_generator.shapes[0])

    def anchor_layout(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """``(shape index (A,), stride (A,))`` of every anchor."""
        shape = anchor_shape_index(anchors, self.shapes.to(anchors.dtype))
        strides = torch.tensor(self.strides, dtype=anchors.dtype, device=anchors.device)
        return shape, strides[shape // self.anchors_per_level]

    def targets(self, flat: Mapping[str, Tensor], anchors: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> YOLOTargets:
        """Assign every image's GT (:func:`~workbench.methods.yolov3.assignment.assign`) and
        encode the positives' box targets."""
        shape, strides = self.anchor_layout(anchors)
        with torch.no_grad():
            predicted = decode(flat["deltas"].detach(), anchors[None], strides[None], self.clamp)
        assignments, box_targets, box_scale = [], [], []
        for i, target in enumerate(targets):
            gt_boxes = target["boxes"].to(anchors.dtype)
            assignment = assign(anchors, shape, self.shapes.to(anchors.dtype), predicted[i], gt_boxes,
                                target["labels"], target.get("ignore"), self.ignore_thresh)
            assignments.append(assignment)
            encoded = torch.zeros_like(anchors)
            scale = torch.zeros_like(anchors[:, 0])
            positive = torch.where(assignment.labels > 0)[0]
            if positive.numel() > 0:
                gt = gt_boxes[assignment.matched_gt[positive]]
                encoded[positive] = encode(gt, anchors[positive], strides[positive])
                area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) / self.box_scale_size**2
                scale[positive] = 2.0 - area
            box_targets.append(encoded)
            box_scale.append(scale)
        labels = torch.stack([a.labels for a in assignments])
        return YOLOTargets(labels, torch.stack(box_targets), torch.stack(box_scale), labels > 0, labels == 0, assignments)

    def _losses(self, flat, anchors, targets, generator):
        return self.loss(flat, self.targets(flat, anchors, targets))


@dataclass(frozen=True)
class YOLOPostprocess(_CandidatesThenNMS):
    """Scores ``sigmoid(obj) sigmoid(cls)`` per (anchor, class) pair, those above
    ``score_thresh`` (strict), the ``topk_candidates`` best per image, decoded with the
    anchors' strides and clipped; then the assembly's class-wise NMS and cut."""

    strides: tuple[int, ...]
    clamp: float = WH_CLAMP

    def _candidates(
        self, preds: Mapping[str, Tensor], anchors: Tensor, level_counts: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
    ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
        device = anchors.device
        strides = anchor_strides(level_counts, self.strides, device=device, dtype=anchors.dtype)
        levels = level_ids(level_counts, device)
        obj = torch.sigmoid(preds["obj_logits"][..., 0])
        cls = torch.sigmoid(preds["cls_logits"])
        for i, image_size in enumerate(image_sizes):
            scores, anchor_index, labels = top_pairs_per_image(obj[i][:, None] * cls[i], self.score_thresh,
                                                               self.topk_candidates)
            boxes = decode(preds["deltas"][i, anchor_index], anchors[anchor_index], strides[anchor_index], self.clamp)
            yield clip_boxes(boxes, image_size), scores, labels, levels[anchor_index], anchor_index


def build_body(cfg: YOLOv3Config) -> tuple[nn.Module, tuple[int, ...]]:
    """The body over strides 8, 16, 32 and its channels."""
    if cfg.backbone == "darknet53":
        body = Darknet53(cfg.darknet_width)
        if cfg.backbone_weights is not None:
            state = torch.load(cfg.backbone_weights, map_location="cpu", weights_only=True)
            try:
                body.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
            except RuntimeError as exc:
                raise ConfigError(f"{cfg.backbone_weights}: does not fit Darknet-53 ({str(exc).splitlines()[0]})") from None
        return body, body.out_channels
    if cfg.backbone == "mobilenet_v2":
        return mobilenet_v2_body(cfg)
    raise ConfigError(f"unknown YOLOv3 backbone {cfg.backbone!r}; use darknet53 or mobilenet_v2")


def mobilenet_v2_body(cfg: YOLOv3Config) -> tuple[nn.Module, tuple[int, ...]]:
    """MobileNetV2 (``backbone_weights``, ``trainable_backbone_layers`` and ``backbone_norm`` as
    for the FPN detectors, :func:`~workbench.modeling.backbones.build_backbone`) returning
    blocks 6 and 13 at strides 8 and 16 and, at stride 32, by ``mobilenet_top``:

    - ``bottleneck`` (the ``tiny`` preset): block 17, the last inverted residual (320 channels,
      linear output);
    - ``expansion`` (the config's default): block 18, the classifier's 1x1 expansion to 1,280
      channels with batch norm and ReLU6, which torchvision's detection backbones (and the FPN
      ``tiny`` presets here) return.

    Why not ``expansion`` under the YOLOv3 neck: trained in the miniature regime (AdamW, frozen
    batch norm), block 18's ReLU6 saturates. After 500 steps of ``tiny`` every one of its 1,280
    channels sat at 0 or 6 on every validation image, so the stride-32 map carried nothing; the
    neck's batch norm then tracked a running variance near 1e-10 and, in evaluation, divided
    rounding noise by ``sqrt(eps)``, so the detector returned the same boxes for every image
    (AP 0.000 after epoch 2). The FPN detectors keep block 18 (their lateral 1x1 convolutions
    have no batch norm); there, too, a quarter to a half of its channels die in training
    (``backbone_mobilenet_top`` of their configs chooses the same way)."""
    from torchvision.models._utils import IntermediateLayerGetter

    blocks = mobilenet_v2_stage_blocks(cfg.mobilenet_top)[1:]  # strides 8, 16, 32
    base = build_backbone("mobilenet_v2_fpn", cfg.backbone_weights, cfg.trainable_backbone_layers, 8,
                          cfg.backbone_norm, (2, 3, 4))
    features = nn.Sequential(*[module for name, module in base.body.named_children() if int(name) <= int(blocks[-1])])
    body = IntermediateLayerGetter(features, return_layers={name: str(i) for i, name in enumerate(blocks)})
    channels = tuple(int([m for m in features[int(b)].modules() if isinstance(m, nn.Conv2d)][-1].out_channels)
                     for b in blocks)
    return body, channels


def objectness_loss(cfg: YOLOv3Config) -> ObjectnessLoss:
    """The element-wise objectness loss ``cfg.objectness_loss`` names."""
    if cfg.objectness_loss == "bce":
        return binary_cross_entropy_with_logits
    if cfg.objectness_loss == "focal":
        return _Focal(cfg.focal_alpha, cfg.focal_gamma)
    if cfg.objectness_loss == "anchor":
        return _Anchor(cfg.anchor_loss_gamma)
    raise ConfigError(f"unknown objectness_loss {cfg.objectness_loss!r}; use one of {', '.join(OBJECTNESS_LOSSES)}")


@dataclass(frozen=True)
class _Focal:
    alpha: float
    gamma: float

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        return sigmoid_focal_loss(logits, target, self.alpha, self.gamma)


@dataclass(frozen=True)
class _Anchor:
    gamma: float

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        return binary_anchor_loss(logits, target, self.gamma)


def build_loss(cfg: YOLOv3Config) -> YOLOLoss:
    return YOLOLoss(objectness_loss(cfg), cfg.obj_loss_weight, cfg.cls_loss_weight, cfg.box_loss_weight)


def build_yolov3(
    cfg: YOLOv3Config,
    *,
    head: nn.Module | None = None,
    loss: YOLOLoss | None = None,
    detector_type: type[YOLOv3Detector] = YOLOv3Detector,
    with_anchor_index: bool = False,
) -> YOLOv3Detector:
    """Build the detector of ``cfg``, with the parts a method replaces: ``head`` (default
    :class:`YOLOv3Head`), ``loss`` (default :func:`build_loss`), the detector class."""
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes counts foreground classes and must be >= 1, got {cfg.num_classes}")
    if cfg.size % 32:
        raise ConfigError(f"the YOLOv3 input size must be a multiple of 32, got {cfg.size}")
    shapes = shapes_per_level(cfg.anchors, 3)
    body, channels = build_body(cfg)
    backbone = YOLOv3Backbone(body, channels, cfg.neck_channels)
    anchors = YOLOAnchors(shapes)
    if head is None:
        head = YOLOv3Head(backbone.out_channels, len(shapes[0]), cfg.num_classes, cfg.obj_prior)
    transform = ImageTransform(cfg.size, cfg.size, cfg.image_mean, cfg.image_std, size_divisible=cfg.size)
    postprocess = YOLOPostprocess(
        backbone.strides, score_thresh=cfg.score_thresh, topk_candidates=cfg.topk_candidates,
        nms_thresh=cfg.nms_thresh, detections_per_image=cfg.detections_per_img, with_anchor_index=with_anchor_index,
        clamp=cfg.wh_clamp,
    )
    return detector_type(
        transform, backbone, head, anchors, strides=backbone.strides, loss=build_loss(cfg) if loss is None else loss,
        postprocess=postprocess, ignore_thresh=cfg.ignore_thresh, box_scale_size=float(cfg.size), clamp=cfg.wh_clamp,
    )


def with_classes(cfg: YOLOv3Config, num_classes: int) -> YOLOv3Config:
    return dataclasses.replace(cfg, num_classes=num_classes)


__all__ = [
    "OBJECTNESS_LOSSES",
    "YOLOPostprocess",
    "YOLOv3Config",
    "YOLOv3Detector",
    "anchor_shape_index",
    "build_body",
    "build_loss",
    "build_yolov3",
    "objectness_loss",
]
