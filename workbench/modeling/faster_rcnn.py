"""Faster R-CNN: configuration, the assembled detector and its builder.

Conventions:
- ``forward(images, targets=None)`` takes float ``(3, H, W)`` images in ``[0, 1]`` and targets
  with ``boxes`` (G, 4) xyxy float in original pixels, ``labels`` (G,) int64 in ``1..C`` and an
  optional ``ignore`` (G,) bool (e.g. crowd boxes: never positives);
- it always returns a :class:`DetectorOutput`: ``losses`` (``loss_rpn_cls``, ``loss_rpn_box``,
  ``loss_rcnn_cls``, ``loss_rcnn_box``) whenever targets are given, ``detections`` (original
  pixels) in evaluation mode, ``raw`` head outputs in both;
- ``num_classes`` counts foreground classes; the predictor has ``num_classes + 1`` outputs.

``raw`` keys: ``rpn_objectness`` / ``rpn_deltas`` (per level (N, A_l, H_l, W_l) /
(N, 4 A_l, H_l, W_l)), ``anchors`` (per level), ``proposals`` and ``proposal_scores`` (per image,
network-input pixels), ``class_logits`` (R, K) and ``box_regression`` (R, 4K) with the RoIs they
belong to (``rois`` in evaluation, ``sampled_rois`` / ``sampled_labels`` with targets; in
evaluation with targets ``class_logits`` are those of the detection pass), ``image_sizes``,
``original_sizes``, ``padded_size``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from workbench.errors import ConfigError
from workbench.losses import smooth_l1
from workbench.modeling.anchor_generator import AnchorGenerator
from workbench.modeling.assignment import MatcherSettings, RandomSampler
from workbench.modeling.backbones import FeatureExtractor, build_backbone
from workbench.modeling.roi_heads import FastRCNNLoss, FastRCNNPostprocess, FastRCNNPredictor, RoIHeads, TwoMLPHead
from workbench.modeling.rpn import ProposalSettings, RegionProposalNetwork, RPNHead, RPNLoss, SigmoidObjectness
from workbench.modeling.trace import TraceRecorder
from workbench.modeling.transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, rescale_boxes
from workbench.ops import BoxCoder
from workbench.structures import Detections, DetectorOutput


@dataclass(frozen=True)
class FasterRCNNConfig:
    """Every setting of the baseline; defaults equal torchvision's ``fasterrcnn_resnet50_fpn``.

    ``anchor_sizes`` has one tuple per feature level of the backbone (5 for the FPN backbones,
    1 for ``vgg16``, e.g. ``((128.0, 256.0, 512.0),)``); ``anchor_aspect_ratios`` apply to every
    level. ``roi_featmap_names=None`` pools from every backbone level except ``pool``.
    ``backbone_weights``: ``None``, a torchvision weights enum member name, or a ``.pth`` path.
    """

    backbone: str = "resnet50_fpn"
    backbone_weights: str | None = None
    trainable_backbone_layers: int = 3
    backbone_norm: str = "frozen_bn"  # frozen_bn | bn (trainable, for training from scratch)
    backbone_returned_layers: tuple[int, ...] = (1, 2, 3, 4)  # ResNet stages fed to the FPN
    fpn_channels: int = 256
    num_classes: int = 90
    # image transform
    min_size: int | tuple[int, ...] = 800
    max_size: int = 1333
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    size_divisible: int = 32
    # anchors
    anchor_sizes: tuple[tuple[float, ...], ...] = ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # RPN
    rpn_box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_allow_low_quality_matches: bool = True
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 1e-3
    rpn_score_thresh: float | None = 0.0
    rpn_smooth_l1_beta: float = 1.0 / 9.0
    # RoI heads
    roi_featmap_names: tuple[str, ...] | None = None
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    box_representation_size: int = 1024
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_add_gt_to_proposals: bool = True
    box_smooth_l1_beta: float = 1.0 / 9.0
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_min_size: float = 1e-2
    # offsets above this log-scale are clamped when decoding
    box_decode_clamp: float = math.log(1000.0 / 16)


class FasterRCNN(nn.Module):
    """Transform -> backbone (+ necks) -> RPN -> RoI heads, each an injected module."""

    def __init__(
        self,
        transform: ImageTransform,
        backbone: FeatureExtractor,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        *,
        generator: torch.Generator | None = None,
        recorder: TraceRecorder | None = None,
    ) -> DetectorOutput:
        """Images (list of (3, H_i, W_i) in [0, 1]) and optional targets -> :class:`DetectorOutput`.

        ``generator`` drives the samplers (and a random ``min_size`` choice); ``recorder``, when
        given, collects the per-image trace without changing any output.
        """
        if targets is not None:
            check_targets(targets, len(images))
        elif self.training:
            raise ValueError("a detector in training mode needs targets")
        batch, net_targets = self.transform(images, targets, generator)
        if recorder is not None:
            recorder.start(len(batch))
        features = self.backbone(batch.tensor)
        rpn_out = self.rpn(features, batch.padded_size, batch.image_sizes, net_targets, generator, recorder)
        roi_out = self.roi_heads(features, rpn_out.proposals, batch.image_sizes, net_targets, generator, recorder)
        raw = {**rpn_out.raw, **roi_out.raw}
        raw.update(image_sizes=batch.image_sizes, original_sizes=batch.original_sizes, padded_size=batch.padded_size)
        detections = [
            to_original(det, size, original)
            for det, size, original in zip(roi_out.detections, batch.image_sizes, batch.original_sizes)
        ]
        if recorder is not None:
            for i, (size, original) in enumerate(zip(batch.image_sizes, batch.original_sizes)):
                recorder.rescale_boxes(i, original[1] / size[1], original[0] / size[0])
            for i, det in enumerate(detections):
                recorder.put(i, "detections", boxes=det.boxes, scores=det.scores, labels=det.labels)
        return DetectorOutput(raw=raw, losses={**rpn_out.losses, **roi_out.losses}, detections=detections)


def to_original(det: Detections, size: tuple[int, int], original: tuple[int, int]) -> Detections:
    """Detections in network-input pixels of ``size`` -> in pixels of the ``original`` image."""
    return Detections(rescale_boxes(det.boxes, size, original), det.scores, det.labels, dict(det.extras))


def check_targets(targets: Sequence[Mapping[str, Tensor]], num_images: int) -> None:
    """Raise ``ValueError`` naming the image when targets do not fit the documented format."""
    if len(targets) != num_images:
        raise ValueError(f"{num_images} images but {len(targets)} targets")
    for i, target in enumerate(targets):
        boxes, labels = target.get("boxes"), target.get("labels")
        if boxes is None or labels is None:
            raise ValueError(f"target {i}: needs 'boxes' and 'labels'")
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
            raise ValueError(f"target {i}: boxes must be float (G, 4), got {boxes.dtype} {tuple(boxes.shape)}")
        if labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
            raise ValueError(f"target {i}: labels must be int64 (G,), got {labels.dtype} {tuple(labels.shape)}")
        ignore = target.get("ignore")
        if ignore is not None and ignore.shape != labels.shape:
            raise ValueError(f"target {i}: ignore must be (G,), got {tuple(ignore.shape)}")


def build_anchor_generator(cfg: FasterRCNNConfig, num_levels: int) -> AnchorGenerator:
    """Anchors of ``cfg`` for a backbone with ``num_levels`` output levels."""
    if len(cfg.anchor_sizes) != num_levels:
        raise ConfigError(
            f"backbone {cfg.backbone} has {num_levels} feature levels but anchor_sizes has "
            f"{len(cfg.anchor_sizes)}; give one tuple of sizes per level"
        )
    return AnchorGenerator(cfg.anchor_sizes, (cfg.anchor_aspect_ratios,) * num_levels)


def build_rpn(cfg: FasterRCNNConfig, in_channels: int, num_levels: int) -> RegionProposalNetwork:
    """The baseline RPN of ``cfg`` (methods build their own head / loss / scoring and reuse the rest)."""
    anchors = build_anchor_generator(cfg, num_levels)
    per_location = anchors.num_anchors_per_location()
    if len(set(per_location)) != 1:
        raise ConfigError("the shared RPN head needs the same number of anchors per location on every level")
    return RegionProposalNetwork(
        RPNHead(in_channels, per_location[0]),
        anchors,
        box_coder=BoxCoder(weights=cfg.rpn_box_weights, clamp=cfg.box_decode_clamp),
        matcher=MatcherSettings(cfg.rpn_fg_iou_thresh, cfg.rpn_bg_iou_thresh, cfg.rpn_allow_low_quality_matches),
        sampler=RandomSampler(cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction),
        scoring=SigmoidObjectness(),
        loss=RPNLoss(functools.partial(smooth_l1, beta=cfg.rpn_smooth_l1_beta)),
        settings=ProposalSettings(
            pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
            pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
            post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
            post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
            nms_thresh=cfg.rpn_nms_thresh,
            min_size=cfg.rpn_min_size,
            score_thresh=cfg.rpn_score_thresh,
        ),
    )


def roi_featmap_names(cfg: FasterRCNNConfig, backbone: FeatureExtractor) -> list[str]:
    """Levels the box head pools from."""
    if cfg.roi_featmap_names is not None:
        return list(cfg.roi_featmap_names)
    return [n for n in backbone.feature_names if n != "pool"]


def build_roi_heads(cfg: FasterRCNNConfig, in_channels: int, featmap_names: Sequence[str]) -> RoIHeads:
    """The baseline box branch of ``cfg``."""
    box_coder = BoxCoder(weights=cfg.box_weights, clamp=cfg.box_decode_clamp)
    pooler = MultiScaleRoIAlign(list(featmap_names), cfg.roi_output_size, cfg.roi_sampling_ratio)
    head = TwoMLPHead(in_channels * cfg.roi_output_size**2, cfg.box_representation_size)
    return RoIHeads(
        pooler,
        head,
        FastRCNNPredictor(cfg.box_representation_size, cfg.num_classes + 1),
        box_coder=box_coder,
        matcher=MatcherSettings(cfg.box_fg_iou_thresh, cfg.box_bg_iou_thresh, False),
        sampler=RandomSampler(cfg.box_batch_size_per_image, cfg.box_positive_fraction),
        loss=FastRCNNLoss(functools.partial(smooth_l1, beta=cfg.box_smooth_l1_beta)),
        postprocess=FastRCNNPostprocess(
            box_coder,
            score_thresh=cfg.box_score_thresh,
            nms_thresh=cfg.box_nms_thresh,
            detections_per_image=cfg.box_detections_per_img,
            min_size=cfg.box_min_size,
        ),
        add_gt_to_proposals=cfg.box_add_gt_to_proposals,
    )


def build_transform(cfg: FasterRCNNConfig) -> ImageTransform:
    return ImageTransform(cfg.min_size, cfg.max_size, cfg.image_mean, cfg.image_std, cfg.size_divisible)


def build_faster_rcnn(cfg: FasterRCNNConfig) -> FasterRCNN:
    """Build the baseline Faster R-CNN described by ``cfg``."""
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes counts foreground classes and must be >= 1, got {cfg.num_classes}")
    backbone = build_backbone(
        cfg.backbone, cfg.backbone_weights, cfg.trainable_backbone_layers, cfg.fpn_channels,
        cfg.backbone_norm, cfg.backbone_returned_layers,
    )
    rpn = build_rpn(cfg, backbone.out_channels, len(backbone.feature_names))
    roi_heads = build_roi_heads(cfg, backbone.out_channels, roi_featmap_names(cfg, backbone))
    return FasterRCNN(build_transform(cfg), backbone, rpn, roi_heads)
