"""Faster R-CNN: configuration, the assembled detector and its builder.

Conventions:
- ``forward(images, targets=None)`` takes float ``(3, H, W)`` images in ``[0, 1]`` and targets
  with ``boxes`` (G, 4) xyxy float in original pixels, ``labels`` (G,) int64 in ``1..C`` and an
  optional ``ignore`` (G,) bool (e.g. crowd boxes: never positives);
- it always returns a :class:`DetectorOutput`: ``losses`` (``loss_rpn_cls``, ``loss_rpn_box``,
  ``loss_rcnn_cls``, ``loss_rcnn_box``) whenever targets are given, ``detections`` (original
  pixels) in evaluation mode, ``raw`` head outputs in both;
- ``num_classes`` counts foreground classes; the predictor has ``num_classes + 1`` outputs.

Building by parts: :func:`build_faster_rcnn` takes, besides the config, the parts a method
replaces (a neck after the FPN, the RPN head / scoring / loss / per-proposal fields, the RoI
sampler, the box loss, the whole sequence of box stages, the RoI post-processing, the loss
weights), so a method passes replacements and never edits a built model. Parts that depend on
the backbone are passed as factories: ``neck(backbone) -> module``, ``rpn_head(in_channels,
num_anchors) -> module``, ``box_stages(in_channels, featmap_names) -> [BoxStage]``;
:func:`build_box_stage` builds one stage of ``cfg`` with overrides (e.g. Cascade R-CNN's).

``raw`` keys: ``rpn_objectness`` / ``rpn_deltas`` (per level (N, A_l, H_l, W_l) /
(N, 4 A_l, H_l, W_l)), ``anchors`` (per level), ``proposals`` and ``proposal_scores`` (per image,
network-input pixels), ``class_logits`` (R, K) and ``box_regression`` (R, 4K) with the RoIs they
belong to (``rois`` in evaluation, ``sampled_rois`` / ``sampled_labels`` with targets; in
evaluation with targets ``class_logits`` are those of the detection pass), ``image_sizes``,
``original_sizes``, ``padded_size``; ``box_stages`` (see :class:`RoIHeads`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from workbench.errors import ConfigError
from workbench.losses import smooth_l1
from workbench.modeling.anchor_generator import AnchorGenerator
from workbench.modeling.assignment import IoUMatcher, RandomSampler, Sampler
from workbench.modeling.backbones import FeatureExtractor, build_backbone
from workbench.modeling.box_stages import BoxStage, StageLoss
from workbench.modeling.detector import Detector, Features, detections_to_original
from workbench.modeling.roi_heads import (
    FastRCNNLoss,
    FastRCNNPostprocess,
    FastRCNNPredictor,
    Postprocess,
    RoIHeads,
    TwoMLPHead,
)
from workbench.modeling.roi_pooler import SparseGradMultiScaleRoIAlign
from workbench.modeling.rpn import (
    ProposalScoring,
    ProposalSettings,
    RegionProposalNetwork,
    RPNHead,
    RPNLoss,
    SigmoidObjectness,
)
from workbench.modeling.trace import TraceRecorder
from workbench.modeling.transform import IMAGENET_MEAN, IMAGENET_STD, ImageBatch, ImageTransform
from workbench.ops import BoxCoder
from workbench.structures import DetectorOutput


@dataclass(frozen=True)
class FasterRCNNConfig:
    """Every setting of the baseline; defaults equal torchvision's ``fasterrcnn_resnet50_fpn``.

    ``anchor_sizes`` has one tuple per feature level of the backbone (5 for the FPN backbones,
    1 for ``vgg16``, e.g. ``((128.0, 256.0, 512.0),)``); ``anchor_aspect_ratios`` apply to every
    level. ``roi_featmap_names=None`` pools from every backbone level except ``pool``.
    ``backbone_weights``: ``None``, a torchvision weights enum member name, or a ``.pth`` path.
    ``rpn_loss_weight`` / ``rcnn_loss_weight`` multiply the RPN's and the box stage's losses.
    """

    backbone: str = "resnet50_fpn"
    backbone_weights: str | None = None
    trainable_backbone_layers: int = 3
    backbone_norm: str = "frozen_bn"  # frozen_bn | bn (trainable, for training from scratch)
    backbone_returned_layers: tuple[int, ...] = (1, 2, 3, 4)  # ResNet stages fed to the FPN
    backbone_mobilenet_top: str = "expansion"  # mobilenet_v2_fpn's stride-32 block: expansion | bottleneck
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
    rpn_loss_weight: float = 1.0
    # RoI heads
    roi_featmap_names: tuple[str, ...] | None = None
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    # RoIAlign's input gradient: "sparse" (one sparse product on the CPU, workbench.ops.roi_align)
    # or "torchvision" (torchvision's kernel); the forward is torchvision's in both
    roi_align_backward: str = "sparse"
    box_representation_size: int = 1024
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_add_gt_to_proposals: bool = True
    box_smooth_l1_beta: float = 1.0 / 9.0
    rcnn_loss_weight: float = 1.0
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_min_size: float = 1e-2
    # offsets above this log-scale are clamped when decoding
    box_decode_clamp: float = math.log(1000.0 / 16)


class FasterRCNN(Detector):
    """Transform -> backbone (+ necks) -> RPN -> RoI heads, each an injected module."""

    def __init__(
        self,
        transform: ImageTransform,
        backbone: FeatureExtractor,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
    ) -> None:
        super().__init__(transform, backbone)
        self.rpn = rpn
        self.roi_heads = roi_heads

    def detect(self, batch: ImageBatch, features: Features, net_targets: list[dict[str, Tensor]] | None,
               generator: torch.Generator | None, recorder: TraceRecorder | None) -> DetectorOutput:
        """RPN proposals, then the RoI heads' box stages on them."""
        rpn_out = self.rpn(features, batch.padded_size, batch.image_sizes, net_targets, generator, recorder)
        roi_out = self.roi_heads(
            features, rpn_out.proposals, batch.image_sizes, net_targets, generator, recorder, rpn_out.fields
        )
        raw = {**rpn_out.raw, **roi_out.raw}
        raw.update(batch.size_fields())
        detections = detections_to_original(roi_out.detections, batch, recorder)
        return DetectorOutput(raw=raw, losses={**rpn_out.losses, **roi_out.losses}, detections=detections)


def build_anchor_generator(cfg: FasterRCNNConfig, num_levels: int) -> AnchorGenerator:
    """Anchors of ``cfg`` for a backbone with ``num_levels`` output levels."""
    if len(cfg.anchor_sizes) != num_levels:
        raise ConfigError(
            f"backbone {cfg.backbone} has {num_levels} feature levels but anchor_sizes has "
            f"{len(cfg.anchor_sizes)}; give one tuple of sizes per level"
        )
    return AnchorGenerator(cfg.anchor_sizes, (cfg.anchor_aspect_ratios,) * num_levels)


#: ``(in_channels, num_anchors per location) -> RPN head`` (e.g. ``RPNHead`` itself).
RPNHeadFactory = Callable[[int, int], nn.Module]
#: ``(in_channels, roi_featmap_names) -> box stages`` of the RoI heads.
BoxStagesFactory = Callable[[int, Sequence[str]], Sequence[BoxStage]]
#: ``backbone -> module`` applied to its features after the FPN (dict -> dict, same names and channels).
NeckFactory = Callable[[FeatureExtractor], nn.Module]


def proposal_settings(cfg: FasterRCNNConfig) -> ProposalSettings:
    """The RPN's proposal selection in ``cfg``: every :class:`ProposalSettings` field ``name`` is
    the config's ``rpn_<name>`` (torchvision's ``rpn_*`` argument names, which the config keeps)."""
    return ProposalSettings(**{f.name: getattr(cfg, f"rpn_{f.name}") for f in fields(ProposalSettings)})


def build_rpn(
    cfg: FasterRCNNConfig,
    in_channels: int,
    num_levels: int,
    *,
    head: RPNHeadFactory | None = None,
    scoring: ProposalScoring | None = None,
    loss: Callable[[Mapping[str, Tensor], Tensor, Tensor], dict[str, Tensor]] | None = None,
    proposal_fields: Callable[[Mapping[str, Tensor]], Mapping[str, Tensor]] | None = None,
    loss_weight: float | None = None,
) -> RegionProposalNetwork:
    """The RPN of ``cfg``; each keyword replaces the baseline's part (``None``: the baseline's:
    :class:`RPNHead`, :class:`SigmoidObjectness`, :class:`RPNLoss`, no fields,
    ``cfg.rpn_loss_weight``)."""
    anchors = build_anchor_generator(cfg, num_levels)
    per_location = anchors.num_anchors_per_location()
    if len(set(per_location)) != 1:
        raise ConfigError("the shared RPN head needs the same number of anchors per location on every level")
    return RegionProposalNetwork(
        (head or RPNHead)(in_channels, per_location[0]),
        anchors,
        box_coder=BoxCoder(weights=cfg.rpn_box_weights, clamp=cfg.box_decode_clamp),
        matcher=IoUMatcher(cfg.rpn_fg_iou_thresh, cfg.rpn_bg_iou_thresh, cfg.rpn_allow_low_quality_matches),
        sampler=RandomSampler(cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction),
        scoring=scoring if scoring is not None else SigmoidObjectness(),
        loss=loss if loss is not None else RPNLoss(functools.partial(smooth_l1, beta=cfg.rpn_smooth_l1_beta)),
        settings=proposal_settings(cfg),
        proposal_fields=proposal_fields,
        loss_weight=cfg.rpn_loss_weight if loss_weight is None else loss_weight,
    )


def roi_featmap_names(cfg: FasterRCNNConfig, backbone: FeatureExtractor) -> list[str]:
    """Levels the box head pools from."""
    if cfg.roi_featmap_names is not None:
        return list(cfg.roi_featmap_names)
    return [n for n in backbone.feature_names if n != "pool"]


#: ``roi_align_backward`` -> pooler class (both are torchvision's forward).
BOX_POOLERS: dict[str, type[MultiScaleRoIAlign]] = {
    "sparse": SparseGradMultiScaleRoIAlign,
    "torchvision": MultiScaleRoIAlign,
}


def build_box_pooler(cfg: FasterRCNNConfig, featmap_names: Sequence[str]) -> MultiScaleRoIAlign:
    """RoIAlign over ``featmap_names`` with the output size and sampling ratio of ``cfg``; its
    input gradient is that of ``cfg.roi_align_backward`` (:data:`BOX_POOLERS`)."""
    if cfg.roi_align_backward not in BOX_POOLERS:
        raise ConfigError(
            f"unknown roi_align_backward {cfg.roi_align_backward!r}; choose one of {', '.join(BOX_POOLERS)}"
        )
    return BOX_POOLERS[cfg.roi_align_backward](list(featmap_names), cfg.roi_output_size, cfg.roi_sampling_ratio)


def build_box_stage(
    cfg: FasterRCNNConfig,
    in_channels: int,
    featmap_names: Sequence[str],
    *,
    pooler: nn.Module | None = None,
    box_weights: tuple[float, float, float, float] | None = None,
    iou_thresholds: tuple[float, float] | None = None,
    class_agnostic: bool = False,
    sampler: Sampler | None = None,
    box_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    loss: StageLoss | None = None,
    loss_name: str = "rcnn",
    loss_weight: float | None = None,
    add_gt_to_proposals: bool | None = None,
    name: str = "rcnn",
) -> BoxStage:
    """One box stage of ``cfg`` (RoIAlign, :class:`TwoMLPHead`, :class:`FastRCNNPredictor`,
    matcher, random sampler, :class:`FastRCNNLoss`); each keyword replaces one setting:

    - ``pooler``: a pooler to share (default: a new one, :func:`build_box_pooler`);
    - ``box_weights``: the coder's weights (default ``cfg.box_weights``);
    - ``iou_thresholds``: ``(fg, bg)`` of the matcher (default ``cfg.box_fg_iou_thresh`` /
      ``cfg.box_bg_iou_thresh``), never with low-quality matches;
    - ``class_agnostic``: one (R, 4) regression for every class (Cascade R-CNN);
    - ``sampler``: default :class:`RandomSampler` of ``cfg.box_batch_size_per_image`` /
      ``cfg.box_positive_fraction``;
    - ``box_loss``: the element-wise regression loss of :class:`FastRCNNLoss` (default smooth L1
      with ``cfg.box_smooth_l1_beta``); ``loss``: the whole :class:`StageLoss` instead;
    - ``loss_name``: the ``<stage>`` of its loss names ``loss_<stage>_cls`` / ``loss_<stage>_box``;
    - ``loss_weight``: default ``cfg.rcnn_loss_weight``;
    - ``add_gt_to_proposals``: default ``cfg.box_add_gt_to_proposals``.

    The other :class:`BoxStage` settings (``input``, ``box_source``, ``fields``, ...) keep their
    defaults; set them with ``dataclasses.replace`` before the stages are assembled.
    """
    if loss is not None and box_loss is not None:
        raise ConfigError("give a box stage either a box_loss or a whole loss, not both")
    fg, bg = iou_thresholds if iou_thresholds is not None else (cfg.box_fg_iou_thresh, cfg.box_bg_iou_thresh)
    num_classes = cfg.num_classes + 1
    if loss is None:
        box_loss = box_loss or functools.partial(smooth_l1, beta=cfg.box_smooth_l1_beta)
        loss = FastRCNNLoss(box_loss, stage=loss_name)
    return BoxStage(
        pooler=pooler if pooler is not None else build_box_pooler(cfg, featmap_names),
        head=TwoMLPHead(in_channels * cfg.roi_output_size**2, cfg.box_representation_size),
        predictor=FastRCNNPredictor(cfg.box_representation_size, num_classes, class_agnostic=class_agnostic),
        coder=BoxCoder(weights=box_weights or cfg.box_weights, clamp=cfg.box_decode_clamp),
        matcher=IoUMatcher(fg, bg, False),
        sampler=sampler or RandomSampler(cfg.box_batch_size_per_image, cfg.box_positive_fraction),
        loss=loss,
        loss_weight=cfg.rcnn_loss_weight if loss_weight is None else loss_weight,
        add_gt_to_proposals=cfg.box_add_gt_to_proposals if add_gt_to_proposals is None else add_gt_to_proposals,
        name=name,
    )


def build_box_postprocess(cfg: FasterRCNNConfig, score_stages: tuple[int, ...] = (-1,)) -> FastRCNNPostprocess:
    """Detections of ``cfg`` (score threshold, NMS, top-k, minimum size) from the scores of the
    inference passes ``score_stages`` (default the last)."""
    return FastRCNNPostprocess(
        score_thresh=cfg.box_score_thresh,
        nms_thresh=cfg.box_nms_thresh,
        detections_per_image=cfg.box_detections_per_img,
        min_size=cfg.box_min_size,
        score_stages=score_stages,
    )


def build_roi_heads(
    cfg: FasterRCNNConfig,
    in_channels: int,
    featmap_names: Sequence[str],
    *,
    stages: BoxStagesFactory | None = None,
    sampler: Sampler | None = None,
    box_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    loss_weight: float | None = None,
    postprocess: Postprocess | None = None,
) -> RoIHeads:
    """The box branch of ``cfg``: one :func:`build_box_stage` stage with ``sampler``,
    ``box_loss`` and ``loss_weight`` replaced where given, or the stages ``stages`` builds (then
    those three must be left out); ``postprocess`` replaces :func:`build_box_postprocess`."""
    if stages is not None:
        if sampler is not None or box_loss is not None or loss_weight is not None:
            raise ConfigError("roi_sampler, box_loss and rcnn_loss_weight apply to the default box stage; "
                              "with box_stages, set them on each stage")
        built = list(stages(in_channels, featmap_names))
    else:
        built = [build_box_stage(cfg, in_channels, featmap_names, sampler=sampler, box_loss=box_loss,
                                 loss_weight=loss_weight)]
    return RoIHeads(built, postprocess if postprocess is not None else build_box_postprocess(cfg))


def build_transform(cfg: FasterRCNNConfig) -> ImageTransform:
    return ImageTransform(cfg.min_size, cfg.max_size, cfg.image_mean, cfg.image_std, cfg.size_divisible)


def build_faster_rcnn(
    cfg: FasterRCNNConfig,
    *,
    neck: NeckFactory | None = None,
    rpn_head: RPNHeadFactory | None = None,
    rpn_scoring: ProposalScoring | None = None,
    rpn_loss: Callable[[Mapping[str, Tensor], Tensor, Tensor], dict[str, Tensor]] | None = None,
    rpn_proposal_fields: Callable[[Mapping[str, Tensor]], Mapping[str, Tensor]] | None = None,
    rpn_loss_weight: float | None = None,
    roi_sampler: Sampler | None = None,
    box_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    rcnn_loss_weight: float | None = None,
    box_stages: BoxStagesFactory | None = None,
    roi_postprocess: Postprocess | None = None,
    detector: Callable[[ImageTransform, FeatureExtractor, RegionProposalNetwork, RoIHeads], FasterRCNN] = FasterRCNN,
) -> FasterRCNN:
    """Build the Faster R-CNN described by ``cfg``, with the parts a method replaces.

    Every keyword left ``None`` is the baseline's part: ``neck`` (none), the RPN's ``head``,
    ``scoring``, ``loss``, ``proposal_fields`` and ``loss_weight`` (:func:`build_rpn`), the box
    stage's ``roi_sampler``, ``box_loss`` and ``rcnn_loss_weight`` or the whole ``box_stages``
    and the ``roi_postprocess`` (:func:`build_roi_heads`). ``detector`` assembles the parts
    (default :class:`FasterRCNN`; a subclass that adds outputs, e.g. KL-RPN's maps).
    """
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes counts foreground classes and must be >= 1, got {cfg.num_classes}")
    backbone = build_backbone(
        cfg.backbone, cfg.backbone_weights, cfg.trainable_backbone_layers, cfg.fpn_channels,
        cfg.backbone_norm, cfg.backbone_returned_layers, cfg.backbone_mobilenet_top,
    )
    if neck is not None:
        backbone = backbone.with_neck(neck(backbone))
    rpn = build_rpn(
        cfg, backbone.out_channels, len(backbone.feature_names), head=rpn_head, scoring=rpn_scoring,
        loss=rpn_loss, proposal_fields=rpn_proposal_fields, loss_weight=rpn_loss_weight,
    )
    roi_heads = build_roi_heads(
        cfg, backbone.out_channels, roi_featmap_names(cfg, backbone), stages=box_stages, sampler=roi_sampler,
        box_loss=box_loss, loss_weight=rcnn_loss_weight, postprocess=roi_postprocess,
    )
    return detector(build_transform(cfg), backbone, rpn, roi_heads)
