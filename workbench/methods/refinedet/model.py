"""RefineDet (Zhang et al., "Single-Shot Refinement Neural Network for Object Detection", CVPR
2018; ``papers/refinedet.md``): what it adds to the SSD baseline.

Network (paper section 2, Fig. 1): a backbone gives four source maps (strides 8, 16, 32, 64);

- the anchor refinement module (ARM, :class:`ARMHead`): per level a 3x3 conv giving, for each
  of the ``A`` anchors of a location, two logits (background, object: a 2-way softmax as the
  authors' code) and four offsets that refine the anchor;
- the transfer connection blocks (:class:`TransferConnection`, paper Fig. 2): per level 3x3
  conv, ReLU, 3x3 conv; below the top level plus a 2x2 stride-2 deconvolution of the block
  above; ReLU; 3x3 conv, ReLU;
- the object detection module (ODM, :class:`ODMHead`): per level a 3x3 conv giving ``C + 1``
  class logits (column 0 the background) and four offsets relative to the *refined* anchor.

Anchors (:class:`~workbench.modeling.ssd.OneSizeAnchors`, paper section 2.2 "Anchors Design
and Matching"): one size per level (4 x the stride: 32, 64, 128, 256 px) and three ratios (1,
2, 1/2 in the authors' order), centred at ``((x + 0.5) * stride, (y + 0.5) * stride)``: 6,375
anchors at 320 x 320 and 16,320 at 512 x 512.

Training (section 2.2, "Loss Function"):

- ARM: each anchor matched to the GT (class-agnostic) by the SSD rule (each GT's best anchor,
  then IoU >= 0.5; :class:`~workbench.modeling.assignment.SSDMatcher`), optionally with a lower
  threshold below which anchors are negatives and between which they are ignored
  (:class:`ThresholdedSSDMatcher`; the authors suggest 0.7 / 0.3 when training is unstable),
  offsets encoded with variances 0.1, 0.1, 0.2, 0.2; softmax cross-entropy with hard negative
  mining 3:1 and smooth L1, both divided by the ARM's positives;
- ODM: the GT matched against the ARM's refined anchors (detached: no gradient flows from the
  ODM's targets into the ARM), targets encoded relative to them; negative anchor filtering
  (section 2.2): anchors whose ARM background probability exceeds 0.99 are left out of the
  ODM's negatives (never mined); softmax cross-entropy with hard negative mining 3:1 and smooth
  L1, divided by the ODM's positives. The two modules' losses are summed
  (``loss_arm_cls``, ``loss_arm_box``, ``loss_odm_cls``, ``loss_odm_box``).

Inference (section 2.2, "Inference"): ODM softmax scores, zeroed for anchors the filter
removes; decoded relative to the refined anchors and clipped; the ``topk_candidates`` (400)
most confident (anchor, class) pairs of the image above ``score_thresh``; class-wise NMS at
0.45 through the ledger (with a recorder); the best ``detections_per_img`` (200).

Switches for the paper's ablation (Table 3): ``refine_anchors`` (off: the ODM matches and
decodes against the original anchors), ``negative_filtering`` (off: no anchor is filtered),
``transfer_connection`` (off: the ODM heads read the ARM's source maps directly).

Decisions the paper leaves open (each a config field where it is a number or a switch):

- the ARM's binary score is a 2-way softmax (background, object), as in the authors' code; an
  anchor is filtered when its background probability is strictly above ``filter_threshold``;
- negative anchor filtering removes filtered anchors from the ODM's *negatives* only: a
  filtered anchor that matches a GT stays a positive (the paper speaks of negatives; one
  PyTorch port drops such positives too);
- the 400 candidates are the best (anchor, class) pairs of the whole image above
  ``score_thresh`` 0.01 (the paper: "top 400 high confident detections per image"), not 400 per
  class as SSD's post-processing;
- with ``transfer_connection`` off the ODM's heads read the ARM's source maps (the four
  backbone levels) directly;
- ``res6`` of the ResNet variant is one bottleneck block (128 inner, 512 output channels,
  stride 2) with the backbone's normalisation (frozen batch norm: an identity at start);
- the ``tiny`` preset's anchors are 2 x the stride (16..128 px), the miniature regime's sizes,
  and its four source levels are MobileNetV2-FPN's (strides 8..64).

Conventions as :mod:`workbench.modeling.dense`: ``N`` images, ``A`` anchors per image in
(level, y, x, anchor) order; flat outputs ``(N, A, C)``; boxes xyxy in network-input pixels
until the detector maps them back.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from workbench import records as R
from workbench.errors import ConfigError
from workbench.losses import smooth_l1
from workbench.modeling.assignment import Assignment, HardNegativeSampler, SSDMatcher
from workbench.modeling.backbones import NORM_LAYERS, _classification_network, _freeze_resnet
from workbench.modeling.dense import SoftmaxLoss, final_nms, record_candidates, sampled_dense_loss, top_pairs_per_image
from workbench.modeling.detector import Detector, Features, detections_to_original
from workbench.modeling.rpn import flatten_levels, level_ids
from workbench.modeling.ssd import (
    ONE_SIZE_RATIOS, SSD_MEAN, SSD_STD, FixedSizeTransform, L2Norm, OneSizeAnchors, _scaled, _vgg_features, _xavier,
    freeze_vgg_blocks, light_source_maps,
)
from workbench.modeling.trace import TraceRecorder
from workbench.modeling.transform import ImageBatch
from workbench.ops import BoxCoder, clip_boxes
from workbench.ops.boxes import pairwise_iou
from workbench.structures import Detections, DetectorOutput

BACKBONES = ("vgg16", "resnet101", "mobilenet_v2_fpn")


@dataclass(frozen=True)
class RefineDetConfig:
    """Every setting of RefineDet; defaults are the paper's RefineDet320 with VGG-16 on VOC
    (``num_classes`` counts foreground classes)."""

    backbone: str = "vgg16"  # vgg16 | resnet101 | mobilenet_v2_fpn
    backbone_weights: str | None = None  # torchvision weights member or a .pth file
    trainable_backbone_layers: int = 4
    backbone_norm: str = "frozen_bn"  # batch-norm backbones: frozen_bn | bn
    width: float = 1.0  # VGG-16 only: scales every channel count (1.0 is the paper's)
    l2norm_scales: tuple[float, float] = (10.0, 8.0)  # conv4_3, conv5_3 (authors' code)
    fc_channels: int = 1024
    extra_channels: tuple[int, int] = (256, 512)  # conv6_1 (1x1), conv6_2 (3x3 stride 2)
    fpn_channels: int = 128  # mobilenet_v2_fpn only
    tcb_channels: int = 256
    num_classes: int = 20
    # image transform: every image resized to (size, size)
    size: int = 320
    image_mean: tuple[float, float, float] = SSD_MEAN
    image_std: tuple[float, float, float] = SSD_STD
    # anchors: one size per level (4 x stride), three ratios
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0)
    anchor_strides: tuple[int, ...] = (8, 16, 32, 64)
    anchor_aspect_ratios: tuple[float, ...] = ONE_SIZE_RATIOS  # 1, 2, 1/2 (the authors' order)
    # switches (paper Table 3)
    refine_anchors: bool = True
    negative_filtering: bool = True
    transfer_connection: bool = True
    # targets and losses
    arm_iou_thresh: float = 0.5
    arm_negative_iou_thresh: float | None = None  # None: every other anchor is a negative
    odm_iou_thresh: float = 0.5
    neg_pos_ratio: float = 3.0
    filter_threshold: float = 0.99  # ARM background probability above which an anchor is filtered
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # variances 0.1, 0.1, 0.2, 0.2
    smooth_l1_beta: float = 1.0
    arm_loss_weight: float = 1.0
    odm_loss_weight: float = 1.0
    # post-processing
    score_thresh: float = 0.01
    topk_candidates: int = 400
    nms_thresh: float = 0.45
    detections_per_img: int = 200
    box_decode_clamp: float = math.log(1000.0 / 16)
    # traces: how many refined anchors (by ARM objectness) the trace keeps as boxes
    trace_top_anchors: int = 100


# -- matching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdedSSDMatcher:
    """The SSD matcher (each GT's best candidate, then IoU >= ``threshold``) with a second
    threshold: a candidate that is not positive and whose best IoU is ``>= negative_threshold``
    is ignored (``-1``) rather than background. ``negative_threshold=None`` (or ``>=
    threshold``) is the plain :class:`SSDMatcher`."""

    threshold: float = 0.5
    negative_threshold: float | None = None

    def __call__(self, candidates: Tensor, gt_boxes: Tensor, gt_labels: Tensor | None = None,
                 gt_ignore: Tensor | None = None) -> Assignment:
        assignment = SSDMatcher(self.threshold)(candidates, gt_boxes, gt_labels, gt_ignore)
        if self.negative_threshold is None or self.negative_threshold >= self.threshold:
            return assignment
        between = (assignment.labels == 0) & (assignment.max_iou >= self.negative_threshold)
        labels = torch.where(between, torch.full_like(assignment.labels, -1), assignment.labels)
        return Assignment(labels, assignment.matched_gt, assignment.max_iou)


def assign_to_references(
    matcher, box_coder: BoxCoder, references: Tensor, targets: Sequence[Mapping[str, Tensor]], class_agnostic: bool,
) -> tuple[list[Assignment], Tensor, Tensor]:
    """Match each image's GT against its own reference boxes (``references`` (N, A, 4): the
    anchors, or the refined anchors of each image) -> (assignments, labels (N, A), box targets
    (N, A, 4) encoded relative to the references, zeros where not positive). ``class_agnostic``
    labels positives 1 (the ARM)."""
    assignments, box_targets = [], []
    for refs, target in zip(references, targets):
        gt_boxes = target["boxes"].to(refs.dtype)
        labels = None if class_agnostic else target["labels"]
        assignment = matcher(refs, gt_boxes, labels, target.get("ignore"))
        assignments.append(assignment)
        encoded = torch.zeros_like(refs)
        positive = torch.where(assignment.labels > 0)[0]
        if positive.numel() > 0:
            encoded[positive] = box_coder.encode(gt_boxes[assignment.matched_gt[positive]], refs[positive])
        box_targets.append(encoded)
    return assignments, torch.stack([a.labels for a in assignments]), torch.stack(box_targets)


def filter_negatives(labels: Tensor, filtered: Tensor) -> Tensor:
    """Negative anchor filtering in training: background anchors (label 0) that the ARM filters
    become ignored (-1), so hard negative mining never picks them; positives stay positive
    (the paper filters negatives only). ``labels`` and ``filtered`` (N, A)."""
    return torch.where(filtered & (labels == 0), torch.full_like(labels, -1), labels)


def filtered_anchors(arm_logits: Tensor, threshold: float) -> Tensor:
    """ARM logits (N, A, 2) -> (N, A) bool: background probability above ``threshold``."""
    return F.softmax(arm_logits, dim=-1)[..., 0] > threshold


# -- backbones --------------------------------------------------------------------------------


class RefineDetVGG(nn.Module):
    """VGG-16 as RefineDet uses it (paper section 2.2 "Backbone Network"; authors' Caffe
    ``model_libs.py``): sources conv4_3 (stride 8) and conv5_3 (stride 16), each through a
    learnable L2 normalisation (initial scales 10 and 8), fc7 (stride 32: pool5 2x2 stride 2,
    fc6 a 3x3 conv dilated 3 with 1024 channels, fc7 1x1) and conv6_2 (stride 64: conv6_1 1x1
    256, conv6_2 3x3 stride 2 512), the new layers Xavier-initialised."""

    def __init__(self, features: nn.Sequential, width: float = 1.0, fc_channels: int = 1024,
                 extra_channels: tuple[int, int] = (256, 512), l2norm_scales: tuple[float, float] = (10.0, 8.0)) -> None:
        super().__init__()
        pools = [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
        if len(pools) != 5:
            raise ValueError(f"expected the 5 max-pool layers of VGG, got {len(pools)}")
        convs = [layer for layer in features if isinstance(layer, nn.Conv2d)]
        conv4, conv5 = convs[9].out_channels, convs[12].out_channels
        fc = _scaled(fc_channels, width)
        mid, out = _scaled(extra_channels[0], width), _scaled(extra_channels[1], width)
        self.conv4_3 = nn.Sequential(*features[: pools[3]])
        self.conv5_3 = nn.Sequential(*features[pools[3]: pools[4]])
        self.l2norm4 = L2Norm(conv4, l2norm_scales[0])
        self.l2norm5 = L2Norm(conv5, l2norm_scales[1])
        fc6 = nn.Conv2d(conv5, fc, kernel_size=3, padding=3, dilation=3)
        fc7 = nn.Conv2d(fc, fc, kernel_size=1)
        self.fc7 = nn.Sequential(features[pools[4]], fc6, nn.ReLU(inplace=True), fc7, nn.ReLU(inplace=True))
        self.conv6 = nn.Sequential(
            nn.Conv2d(fc, mid, kernel_size=1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        _xavier(self.fc7)
        _xavier(self.conv6)
        self.out_channels = [conv4, conv5, fc, out]

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        c4 = self.conv4_3(images)
        c5 = self.conv5_3(c4)
        f7 = self.fc7(c5)
        c6 = self.conv6(f7)
        return OrderedDict(zip("0123", (self.l2norm4(c4), self.l2norm5(c5), f7, c6)))


class RefineDetResNet(nn.Module):
    """ResNet (101 in the paper) sources: the last blocks of stages 2, 3 and 4 (strides 8, 16,
    32) and an extra bottleneck block ``res6`` of stride 2 (stride 64, 512 channels) initialised
    from N(0, 0.01) (paper section 2.2, "Optimization")."""

    def __init__(self, network: nn.Module, norm_layer) -> None:
        super().__init__()
        self.stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool, network.layer1)
        self.layer2, self.layer3, self.layer4 = network.layer2, network.layer3, network.layer4
        channels = [int(layer[-1].conv3.out_channels) for layer in (self.layer2, self.layer3, self.layer4)]
        top = channels[-1]
        downsample = nn.Sequential(nn.Conv2d(top, 512, kernel_size=1, stride=2, bias=False), norm_layer(512))
        self.res6 = Bottleneck(top, 128, stride=2, downsample=downsample, norm_layer=norm_layer)
        for layer in self.res6.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
        self.out_channels = channels + [512]

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        c3 = self.layer2(self.stem(images))
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return OrderedDict(zip("0123", (c3, c4, c5, self.res6(c5))))


def build_refinedet_backbone(cfg: RefineDetConfig) -> nn.Module:
    """The four source maps of ``cfg.backbone``; the module's ``out_channels`` lists their
    channels. ``mobilenet_v2_fpn`` is the miniature regime's light backbone: MobileNetV2 stages
    at strides 8, 16, 32 with an FPN and its max-pooled stride-64 level."""
    if cfg.backbone == "vgg16":
        features = _vgg_features(cfg.backbone_weights, cfg.width)
        freeze_vgg_blocks(features, cfg.trainable_backbone_layers)
        return RefineDetVGG(features, cfg.width, cfg.fc_channels, cfg.extra_channels, cfg.l2norm_scales)
    if cfg.backbone == "resnet101":
        if not 0 <= cfg.trainable_backbone_layers <= 5:
            raise ConfigError(f"trainable_backbone_layers for resnet101 must be in [0, 5], got {cfg.trainable_backbone_layers}")
        network = _classification_network("resnet101_fpn", cfg.backbone_weights, cfg.backbone_norm)
        _freeze_resnet(network, cfg.trainable_backbone_layers)
        return RefineDetResNet(network, NORM_LAYERS[cfg.backbone_norm])
    if cfg.backbone == "mobilenet_v2_fpn":
        return light_source_maps(cfg.backbone_weights, cfg.trainable_backbone_layers, cfg.fpn_channels,
                                 cfg.backbone_norm)
    raise ConfigError(f"unknown RefineDet backbone {cfg.backbone!r}; choose one of {', '.join(BACKBONES)}")


# -- heads and transfer connections ---------------------------------------------------------------


class _PerLevelConvs(nn.Module):
    """One 3x3 conv per level and output name: ``name -> A * columns`` channels."""

    def __init__(self, in_channels: Sequence[int], num_anchors: int, columns: Mapping[str, int]) -> None:
        super().__init__()
        self.names = tuple(columns)
        self.convs = nn.ModuleDict({
            name: nn.ModuleList(nn.Conv2d(c, num_anchors * k, kernel_size=3, padding=1) for c in in_channels)
            for name, k in columns.items()
        })
        _xavier(self)

    def forward(self, features: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        if len(features) != len(next(iter(self.convs.values()))):
            raise ValueError(f"the head has {len(next(iter(self.convs.values())))} levels, got {len(features)} maps")
        return {name: [conv(f) for conv, f in zip(self.convs[name], features)] for name in self.names}


class ARMHead(_PerLevelConvs):
    """``arm_logits`` (2 per anchor: background, object) and ``arm_deltas`` (4 per anchor)."""

    def __init__(self, in_channels: Sequence[int], num_anchors: int) -> None:
        super().__init__(in_channels, num_anchors, {"arm_logits": 2, "arm_deltas": 4})


class ODMHead(_PerLevelConvs):
    """``cls_logits`` (``C + 1`` per anchor, column 0 the background) and ``deltas`` (4 per
    anchor, relative to the refined anchor)."""

    def __init__(self, in_channels: Sequence[int], num_anchors: int, num_classes_with_background: int) -> None:
        super().__init__(in_channels, num_anchors, {"cls_logits": num_classes_with_background, "deltas": 4})


class TransferConnection(nn.Module):
    """The transfer connection blocks, one per level (paper Fig. 2), run from the top level
    down: ``lateral`` (3x3 conv, ReLU, 3x3 conv), plus the 2x2 stride-2 deconvolution of the
    block above (all but the top level), ReLU, then ``out`` (3x3 conv, ReLU). A deconvolved map
    one row or column off the lateral's size (odd sizes) is cropped or zero-padded to it."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1))
            for c in in_channels
        )
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(channels, channels, 2, stride=2) for _ in in_channels[:-1])
        self.out = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)) for _ in in_channels
        )
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.out_channels = [channels] * len(in_channels)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        outputs: list[Tensor] = [features[0]] * len(features)
        above: Tensor | None = None
        for level in range(len(features) - 1, -1, -1):
            x = self.lateral[level](features[level])
            if above is not None:
                up = self.upsample[level](above)
                h, w = x.shape[-2:]
                up = F.pad(up[..., :h, :w], (0, max(0, w - up.shape[-1]), 0, max(0, h - up.shape[-2])))
                x = x + up
            above = self.out[level](F.relu(x))
            outputs[level] = above
        return outputs


# -- the detector -----------------------------------------------------------------------------


class RefineDet(Detector):
    """Transform -> backbone -> ARM -> (TCB) -> ODM on the refined anchors -> losses /
    post-processing (see the module docstring). Returns a :class:`DetectorOutput` in both modes;
    ``raw`` holds the head outputs per level, ``anchors`` (per level), the flat
    ``refined_anchors`` (N, A, 4) (the ARM's, detached), ``arm_objectness`` (N, A) and
    ``filtered`` (N, A) bool, and the batch sizes; with targets also ``arm_targets`` and
    ``odm_targets`` (:class:`~workbench.modeling.dense.DenseTargets`: labels, encoded box
    targets and the anchors hard negative mining chose; the ODM's labels after negative anchor
    filtering). The switches and settings after the parts are keyword-only and have no default
    here: :class:`RefineDetConfig` holds the paper's values (:func:`build_refinedet`)."""

    def __init__(
        self,
        transform: nn.Module,
        backbone: nn.Module,
        arm_head: nn.Module,
        tcb: nn.Module | None,
        odm_head: nn.Module,
        anchor_generator: OneSizeAnchors,
        *,
        box_coder: BoxCoder,
        arm_matcher,
        odm_matcher,
        sampler,
        arm_loss: SoftmaxLoss,
        odm_loss: SoftmaxLoss,
        refine_anchors: bool,
        negative_filtering: bool,
        filter_threshold: float,
        score_thresh: float,
        topk_candidates: int,
        nms_thresh: float,
        detections_per_img: int,
        trace_top_anchors: int,
    ) -> None:
        super().__init__(transform, backbone)
        self.arm_head = arm_head
        self.tcb = tcb
        self.odm_head = odm_head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.arm_matcher = arm_matcher
        self.odm_matcher = odm_matcher
        self.sampler = sampler
        self.arm_loss = arm_loss
        self.odm_loss = odm_loss
        self.refine_anchors = refine_anchors
        self.negative_filtering = negative_filtering
        self.filter_threshold = filter_threshold
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.trace_top_anchors = trace_top_anchors

    def detect(self, batch: ImageBatch, features: Features, net_targets: list[dict[str, Tensor]] | None,
               generator: torch.Generator | None, recorder: TraceRecorder | None) -> DetectorOutput:
        """ARM on the backbone levels, ODM on the TCB levels from the (refined, filtered) anchors."""
        levels = list(features.values()) if isinstance(features, Mapping) else list(features)
        arm_out = self.arm_head(levels)
        odm_out = self.odm_head(self.tcb(levels) if self.tcb is not None else levels)
        feature_sizes = [tuple(f.shape[-2:]) for f in levels]
        # anchors, refined anchors and decoding in float32 whatever the features' dtype (AMP):
        # bf16 cannot hold pixel coordinates of a 512 px input to a pixel
        anchors_per_level = self.anchor_generator(batch.padded_size, feature_sizes, dtype=torch.float32,
                                                  device=levels[0].device)
        per_location = self.anchor_generator.num_anchors_per_location()
        arm = {name: flatten_levels(outs, per_location) for name, outs in arm_out.items()}
        odm = {name: flatten_levels(outs, per_location) for name, outs in odm_out.items()}
        anchors = torch.cat(anchors_per_level, dim=0)
        level_counts = [int(a.shape[0]) for a in anchors_per_level]

        with torch.no_grad():
            arm_deltas = arm["arm_deltas"].detach().float()
            refined = self.box_coder.decode(arm_deltas.reshape(-1, 4), anchors.repeat(arm_deltas.shape[0], 1))
            refined = refined.view(arm_deltas.shape)
            objectness = F.softmax(arm["arm_logits"].detach().float(), dim=-1)[..., 1]
            if self.negative_filtering:
                filtered = filtered_anchors(arm["arm_logits"].detach().float(), self.filter_threshold)
            else:
                filtered = torch.zeros_like(objectness, dtype=torch.bool)
        references = refined if self.refine_anchors else anchors.expand_as(refined)

        raw: dict[str, object] = {**arm_out, **odm_out}
        raw.update(anchors=anchors_per_level, refined_anchors=refined, arm_objectness=objectness, filtered=filtered,
                   **batch.size_fields())
        losses: dict[str, Tensor] = {}
        if net_targets is not None:
            losses = self._losses(arm, odm, anchors, references, filtered, net_targets, generator, raw)
        detections: list[Detections] = []
        if not self.training:
            with torch.no_grad():
                if recorder is not None:
                    self._record_anchors(recorder, anchors, level_counts, feature_sizes, refined, objectness,
                                         filtered, batch)
                in_network = self.postprocess(
                    {k: v.detach() for k, v in odm.items()}, anchors, references, filtered, level_counts,
                    batch.image_sizes, recorder,
                )
                detections = detections_to_original(in_network, batch, recorder)
                if recorder is not None:
                    for i, det in enumerate(detections):
                        recorder.put(i, R.DETECTIONS, boxes=det.boxes, scores=det.scores, labels=det.labels, **det.extras)
        return DetectorOutput(raw=raw, losses=losses, detections=detections)

    # -- training ---------------------------------------------------------------------------

    def _losses(self, arm: Mapping[str, Tensor], odm: Mapping[str, Tensor], anchors: Tensor, references: Tensor,
                filtered: Tensor, targets: Sequence[Mapping[str, Tensor]], generator: torch.Generator | None,
                raw: dict[str, object]) -> dict[str, Tensor]:
        """Both modules' losses; their targets go to ``raw`` (``arm_targets``, ``odm_targets``:
        :class:`~workbench.modeling.dense.DenseTargets`, the ODM's labels after negative anchor filtering)."""
        n = references.shape[0]
        arm_assign, arm_labels, arm_box = assign_to_references(
            self.arm_matcher, self.box_coder, anchors.expand(n, -1, -1), targets, class_agnostic=True)
        arm_preds = {"cls_logits": arm["arm_logits"], "deltas": arm["arm_deltas"]}
        losses, raw["arm_targets"] = sampled_dense_loss(self.arm_loss, self.sampler, arm_preds, arm_labels, arm_box,
                                                     arm_assign, generator)
        odm_assign, odm_labels, odm_box = assign_to_references(
            self.odm_matcher, self.box_coder, references, targets, class_agnostic=False)
        odm_labels = filter_negatives(odm_labels, filtered)
        odm_losses, raw["odm_targets"] = sampled_dense_loss(self.odm_loss, self.sampler, odm, odm_labels, odm_box,
                                                         odm_assign, generator)
        losses.update(odm_losses)
        return losses

    # -- inference --------------------------------------------------------------------------

    def postprocess(
        self,
        odm: Mapping[str, Tensor],
        anchors: Tensor,
        references: Tensor,
        filtered: Tensor,
        level_counts: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
        recorder: TraceRecorder | None = None,
    ) -> list[Detections]:
        """ODM outputs (N, A, C) by name, the anchors (A, 4), the ODM's references (N, A, 4),
        the filter mask (N, A) -> detections per image in network-input pixels; extras
        ``anchor_index`` (the anchor each came from), ``anchor_iou_before`` / ``anchor_iou_after``
        (IoU of the detection's box with its anchor and with its refined anchor)."""
        probabilities = F.softmax(odm["cls_logits"].float(), dim=-1)[..., 1:]  # (N, A, K) foreground
        probabilities = probabilities.masked_fill(filtered[..., None], 0.0)  # negative anchor filtering
        levels = level_ids(level_counts, anchors.device)
        out = []
        for i, image_size in enumerate(image_sizes):
            scores, anchor_index, labels = top_pairs_per_image(probabilities[i], self.score_thresh, self.topk_candidates)
            reference = references[i, anchor_index]
            boxes = clip_boxes(self.box_coder.decode(odm["deltas"][i, anchor_index].float(), reference), image_size)
            record_candidates(recorder, i, boxes, scores, labels, levels[anchor_index], anchor_index)
            det = final_nms(boxes, scores, labels, anchor_index, self.nms_thresh, self.detections_per_img, True,
                            recorder, i)
            kept_anchor = det.extras["anchor_index"]
            kept_reference = references[i, kept_anchor]
            det.extras["anchor_iou_before"] = pairwise_iou(anchors[kept_anchor], det.boxes).to(det.scores.dtype)
            det.extras["anchor_iou_after"] = pairwise_iou(kept_reference, det.boxes).to(det.scores.dtype)
            if recorder is not None:
                recorder.put(i, R.DETECTION_ANCHORS, boxes=kept_reference, scores=det.scores, labels=det.labels,
                             anchor_index=kept_anchor)
            out.append(det)
        return out

    def _record_anchors(self, recorder: TraceRecorder, anchors: Tensor, level_counts: Sequence[int],
                        feature_sizes: Sequence[tuple[int, int]], refined: Tensor, objectness: Tensor,
                        filtered: Tensor, batch) -> None:
        """The anchor records of every image (see :mod:`workbench.methods.refinedet`)."""
        levels = level_ids(level_counts, anchors.device)
        per_location = len(self.anchor_generator.ratios)
        for i in range(refined.shape[0]):
            recorder.put(i, R.ANCHORS, boxes=anchors, levels=levels)
            recorder.put(i, R.REFINED_ANCHORS, boxes=refined[i].half(), scores=objectness[i].half(),
                         filtered=filtered[i])
            k = min(self.trace_top_anchors, int(objectness.shape[1]))
            top_scores, top_index = objectness[i].topk(k)
            recorder.put(i, R.TOP_REFINED_ANCHORS, boxes=refined[i, top_index], scores=top_scores,
                         anchor_index=top_index)
            (orig_h, orig_w), (net_h, net_w) = batch.original_sizes[i], batch.image_sizes[i]
            maps = filtered_share_maps(filtered[i], feature_sizes, per_location, batch.padded_size,
                                       cell_scale=(orig_h / net_h, orig_w / net_w))
            recorder.put(i, R.FILTERED_ANCHOR_MAP,
                         **{k: v if k.startswith(R.MAP_CELL_SIZE) else v.half() for k, v in maps.items()})


def filtered_share_maps(filtered: Tensor, feature_sizes: Sequence[tuple[int, int]], anchors_per_location: int,
                        padded_size: tuple[int, int], cell_scale: tuple[float, float] = (1.0, 1.0)) -> dict[str, Tensor]:
    """The filter mask of one image (A,) over levels of ``feature_sizes`` -> the share of the
    anchors filtered per location: one map per level at that level's resolution
    (``share_level<k>``, one value per anchor location, with its cell
    ``cell_size_share_level<k>``: the level's stride times ``cell_scale``), their mean over the
    levels on the finest level's grid (``share``: each fine cell takes, on every level, the
    location whose cell holds its centre) and ``cell_size`` (a fine cell in original pixels: the
    finest stride times ``cell_scale``)."""
    fine_h, fine_w = (int(v) for v in feature_sizes[0])
    maps: dict[str, Tensor] = {}
    offset = 0
    total = torch.zeros(fine_h, fine_w, dtype=torch.float32, device=filtered.device)
    for level, (h, w) in enumerate(feature_sizes):
        h, w = int(h), int(w)
        count = h * w * anchors_per_location
        share = filtered[offset:offset + count].view(h, w, anchors_per_location).float().mean(dim=-1)
        total += spread_to(share, (fine_h, fine_w))
        maps[f"share_level{level}"] = share
        maps[f"{R.MAP_CELL_SIZE}_share_level{level}"] = level_cell(padded_size, (h, w), cell_scale)
        offset += count
    if offset != filtered.shape[0]:
        raise ValueError(f"the levels hold {offset} anchors, the mask {filtered.shape[0]}")
    maps["share"] = total / len(feature_sizes)
    maps[R.MAP_CELL_SIZE] = level_cell(padded_size, (fine_h, fine_w), cell_scale)
    return maps


def spread_to(values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A ``(h, w)`` map over the same extent as a finer ``shape`` grid, on that grid: cell
    ``(i, j)`` takes ``values[floor((i + 1/2) h / H), floor((j + 1/2) w / W)]``."""
    h, w = values.shape
    rows = ((torch.arange(shape[0], device=values.device) + 0.5) * h / shape[0]).floor().long().clamp(max=h - 1)
    cols = ((torch.arange(shape[1], device=values.device) + 0.5) * w / shape[1]).floor().long().clamp(max=w - 1)
    return values[rows][:, cols]


def level_cell(padded_size: tuple[int, int], grid: tuple[int, int], cell_scale: tuple[float, float]) -> Tensor:
    """A cell of a ``grid`` over the padded input, in original pixels: ``(padded / grid) * scale``."""
    return torch.tensor([padded_size[0] / grid[0] * cell_scale[0], padded_size[1] / grid[1] * cell_scale[1]],
                        dtype=torch.float32)


def build_refinedet(cfg: RefineDetConfig) -> RefineDet:
    """Build the RefineDet described by ``cfg``."""
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes counts foreground classes and must be >= 1, got {cfg.num_classes}")
    if len(cfg.anchor_sizes) != 4 or len(cfg.anchor_strides) != 4:
        raise ConfigError("RefineDet has four source levels: give four anchor_sizes and anchor_strides")
    backbone = build_refinedet_backbone(cfg)
    anchors = OneSizeAnchors(cfg.anchor_sizes, cfg.anchor_aspect_ratios, cfg.anchor_strides)
    num_anchors = len(cfg.anchor_aspect_ratios)
    in_channels = list(backbone.out_channels)
    arm_head = ARMHead(in_channels, num_anchors)
    tcb = TransferConnection(in_channels, cfg.tcb_channels) if cfg.transfer_connection else None
    odm_head = ODMHead(tcb.out_channels if tcb is not None else in_channels, num_anchors, cfg.num_classes + 1)
    box_coder = BoxCoder(weights=cfg.box_weights, clamp=cfg.box_decode_clamp)
    box_loss = functools.partial(smooth_l1, beta=cfg.smooth_l1_beta)
    return RefineDet(
        FixedSizeTransform((cfg.size, cfg.size), cfg.image_mean, cfg.image_std),
        backbone, arm_head, tcb, odm_head, anchors,
        box_coder=box_coder,
        arm_matcher=ThresholdedSSDMatcher(cfg.arm_iou_thresh, cfg.arm_negative_iou_thresh),
        odm_matcher=SSDMatcher(cfg.odm_iou_thresh),
        sampler=HardNegativeSampler(cfg.neg_pos_ratio),
        arm_loss=SoftmaxLoss(box_loss=box_loss, stage="arm", cls_weight=cfg.arm_loss_weight, box_weight=cfg.arm_loss_weight),
        odm_loss=SoftmaxLoss(box_loss=box_loss, stage="odm", cls_weight=cfg.odm_loss_weight, box_weight=cfg.odm_loss_weight),
        refine_anchors=cfg.refine_anchors,
        negative_filtering=cfg.negative_filtering,
        filter_threshold=cfg.filter_threshold,
        score_thresh=cfg.score_thresh,
        topk_candidates=cfg.topk_candidates,
        nms_thresh=cfg.nms_thresh,
        detections_per_img=cfg.detections_per_img,
        trace_top_anchors=cfg.trace_top_anchors,
    )
