"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) on the dense assembly.

Backbone: a ResNet FPN over stages C3..C5 (``backbone_returned_layers=(2, 3, 4)``) with two extra
levels P6 = conv3x3/2(P5) and P7 = conv3x3/2(ReLU(P6)) (torchvision's ``LastLevelP6P7`` fed with
P5, as ``retinanet_resnet50_fpn``); levels ``0, 1, 2, p6, p7`` at strides 8..128.

Head: two subnets of ``num_convs`` 3x3 conv + ReLU layers shared over the levels, one ending in
``A * K`` class logits (sigmoid per class, bias initialised to ``-log((1 - pi) / pi)`` with the
prior ``pi = 0.01``, paper section 4.1), the other in ``4 A`` box offsets (weights 1, 1, 1, 1).

Logit columns: one per foreground class (column ``j`` is label ``j + 1``). ``background_column``
builds torchvision's layout instead (``num_classes + 1`` columns, column 0 standing for the
background and never a target; labels equal the column), which is what loading a torchvision
model needs (:func:`workbench.modeling.load_torchvision_retinanet`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from workbench.errors import ConfigError
from workbench.losses import l1, smooth_l1
from workbench.modeling.anchor_generator import AnchorGenerator
from workbench.modeling.assignment import IoUMatcher
from workbench.modeling.backbones import FeatureExtractor, build_backbone
from workbench.modeling.dense import AllAnchors, DenseDetector, FocalLoss, SigmoidPostprocess
from workbench.modeling.transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from workbench.ops import BoxCoder


def retinanet_anchor_sizes(
    base_sizes: Sequence[float] = (32, 64, 128, 256, 512), octave_scales: int = 3
) -> tuple[tuple[float, ...], ...]:
    """Per level, ``base * 2 ** (k / octave_scales)`` for ``k = 0 .. octave_scales - 1``, truncated
    to integers as torchvision's RetinaNet does (``int(x * 2 ** (1 / 3))``: 32, 40, 50 on P3)."""
    return tuple(tuple(float(int(b * 2 ** (k / octave_scales))) for k in range(octave_scales)) for b in base_sizes)


@dataclass(frozen=True)
class RetinaNetConfig:
    """Every setting of RetinaNet; defaults equal torchvision's ``retinanet_resnet50_fpn``
    (except ``num_classes``, which counts foreground classes here)."""

    backbone: str = "resnet50_fpn"
    backbone_weights: str | None = None
    trainable_backbone_layers: int = 3
    backbone_norm: str = "frozen_bn"
    backbone_returned_layers: tuple[int, ...] = (2, 3, 4)
    backbone_mobilenet_top: str = "expansion"  # mobilenet_v2_fpn's stride-32 block: expansion | bottleneck
    fpn_channels: int = 256
    num_classes: int = 90
    background_column: bool = False
    # image transform
    min_size: int | tuple[int, ...] = 800
    max_size: int = 1333
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    size_divisible: int = 32
    # anchors: one tuple of sizes per level (P3..P7), the same ratios (h / w) on every level
    anchor_sizes: tuple[tuple[float, ...], ...] = retinanet_anchor_sizes()
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # head
    head_num_convs: int = 4
    prior_probability: float = 0.01
    # training targets and loss
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    allow_low_quality_matches: bool = True
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: str = "l1"  # l1 (torchvision) | smooth_l1 (Detectron, beta 0.1)
    smooth_l1_beta: float = 0.1
    loss_normalize: str = "image"  # image (torchvision) | batch
    cls_loss_weight: float = 1.0
    box_loss_weight: float = 1.0
    # post-processing
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float = 0.5
    detections_per_img: int = 300
    box_decode_clamp: float = math.log(1000.0 / 16)


class RetinaNetHead(nn.Module):
    """Classification and box subnets shared over levels (see the module docstring).

    ``forward([(N, C_in, H_l, W_l)])`` -> ``{"cls_logits": [(N, A K, H_l, W_l)],
    "deltas": [(N, 4 A, H_l, W_l)]}``. Convolution weights start from N(0, 0.01), biases from 0
    (the class logits' bias from the prior), as in the paper and torchvision.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_columns: int,
        num_convs: int = 4,
        prior_probability: float = 0.01,
    ) -> None:
        super().__init__()
        self.cls_subnet = _subnet(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_columns, kernel_size=3, padding=1)
        self.box_subnet = _subnet(in_channels, num_convs)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=3, padding=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))

    def forward(self, features: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        cls_logits, deltas = [], []
        for feature in features:
            cls_logits.append(self.cls_logits(self.cls_subnet(feature)))
            deltas.append(self.bbox_pred(self.box_subnet(feature)))
        return {"cls_logits": cls_logits, "deltas": deltas}


def _subnet(channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def build_retinanet_backbone(cfg: RetinaNetConfig) -> FeatureExtractor:
    """The FPN backbone of ``cfg`` with P6 / P7 computed from P5 (replacing the max-pooled level
    of the two-stage FPN); levels ``"0".."k-1", "p6", "p7"``."""
    base = build_backbone(
        cfg.backbone, cfg.backbone_weights, cfg.trainable_backbone_layers, cfg.fpn_channels,
        cfg.backbone_norm, cfg.backbone_returned_layers, cfg.backbone_mobilenet_top,
    )
    if not isinstance(base.neck, FeaturePyramidNetwork):
        raise ConfigError(f"RetinaNet needs an FPN backbone; {cfg.backbone} has none")
    in_channels = [int(block[0].in_channels) for block in base.neck.inner_blocks]
    channels = cfg.fpn_channels
    neck = FeaturePyramidNetwork(in_channels, channels, extra_blocks=LastLevelP6P7(channels, channels))
    names = base.feature_names[:-1] + ("p6", "p7")
    last = base.strides[-2]
    return FeatureExtractor(base.body, neck, channels, names, base.strides[:-1] + (last * 2, last * 4))


def _config_box_loss(cfg: RetinaNetConfig) -> Callable[[Tensor, Tensor], Tensor]:
    if cfg.box_loss == "l1":
        return l1
    if cfg.box_loss == "smooth_l1":
        return functools.partial(smooth_l1, beta=cfg.smooth_l1_beta)
    raise ConfigError(f"unknown RetinaNet box_loss {cfg.box_loss!r}; use l1 or smooth_l1")


def build_retinanet(
    cfg: RetinaNetConfig,
    *,
    neck: Callable[[FeatureExtractor], nn.Module] | None = None,
    box_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> DenseDetector:
    """Build the RetinaNet described by ``cfg``, with the parts a method replaces: ``neck``
    (``backbone -> module`` applied after the FPN, dict -> dict with the same names and
    channels; default none) and ``box_loss`` (the element-wise regression loss; default the
    one ``cfg.box_loss`` names)."""
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes counts foreground classes and must be >= 1, got {cfg.num_classes}")
    backbone = build_retinanet_backbone(cfg)
    if neck is not None:
        backbone = backbone.with_neck(neck(backbone))
    num_levels = len(backbone.feature_names)
    if len(cfg.anchor_sizes) != num_levels:
        raise ConfigError(
            f"the RetinaNet backbone has {num_levels} levels but anchor_sizes has {len(cfg.anchor_sizes)}; "
            "give one tuple of sizes per level"
        )
    anchors = AnchorGenerator(cfg.anchor_sizes, (cfg.anchor_aspect_ratios,) * num_levels)
    per_location = anchors.num_anchors_per_location()
    if len(set(per_location)) != 1:
        raise ConfigError("the shared RetinaNet head needs the same number of anchors per location on every level")
    first_label = 0 if cfg.background_column else 1
    num_columns = cfg.num_classes + (1 if cfg.background_column else 0)
    head = RetinaNetHead(backbone.out_channels, per_location[0], num_columns, cfg.head_num_convs, cfg.prior_probability)
    box_coder = BoxCoder(weights=cfg.box_weights, clamp=cfg.box_decode_clamp)
    if box_loss is None:
        box_loss = _config_box_loss(cfg)
    transform = ImageTransform(cfg.min_size, cfg.max_size, cfg.image_mean, cfg.image_std, cfg.size_divisible)
    return DenseDetector(
        transform,
        backbone,
        head,
        anchors,
        box_coder=box_coder,
        matcher=IoUMatcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.allow_low_quality_matches),
        sampler=AllAnchors(),
        loss=FocalLoss(
            alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, box_loss=box_loss, first_label=first_label,
            normalize=cfg.loss_normalize, cls_weight=cfg.cls_loss_weight, box_weight=cfg.box_loss_weight,
        ),
        postprocess=SigmoidPostprocess(
            box_coder, score_thresh=cfg.score_thresh, topk_candidates=cfg.topk_candidates,
            nms_thresh=cfg.nms_thresh, detections_per_image=cfg.detections_per_img, first_label=first_label,
        ),
    )
