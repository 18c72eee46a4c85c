"""SSD (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016) on the dense assembly.

Backbone (:class:`SSDVGG`): VGG-16 with pool3 in ceil mode; level 0 is conv4_3 (+ ReLU) through a
learnable per-channel L2 normalisation (initial scale 20, paper section 3.1 / ParseNet); level 1
is fc7, reached through pool5 (3x3, stride 1, padding 1), fc6 (3x3 conv dilated 6, 1024
channels) and fc7 (1x1, 1024); then the extra layers, each a 1x1 conv and a strided 3x3 (or
4x4) conv with ReLUs, down to 1x1. ``width`` scales every channel count (a light network for
the CPU; 1.0 is the paper's).

Default boxes (:class:`DefaultBoxes`): torchvision's ``DefaultBoxGenerator`` arithmetic. Level
``k`` has relative scale ``s_k`` and the next ``s_{k+1}``; per location the boxes are
``(s_k, s_k)``, ``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k s_{k+1})``, then for each aspect ratio
``r`` the pair ``(s_k sqrt(r), s_k / sqrt(r))`` and its transpose; widths and heights are
clipped to ``[0, 1]`` (``clip``) and multiplied by the input size; centres are
``(x + 0.5) / (W / step_k)`` times the width (``step_k = W / W_k`` without ``steps``).

Transform (:class:`FixedSizeTransform`): normalise, then resize every image to the fixed input
size (aspect ratio not kept), as torchvision's SSD transform.

The same-backbone variant (``backbone="mobilenet_v2_fpn"``, ``anchor_sizes`` given,
``candidates="per_image"``): the source maps of :func:`light_source_maps` (the miniature
regime's MobileNetV2-FPN at strides 8, 16, 32, 64), anchors of one size per level
(:class:`OneSizeAnchors`, RefineDet's), the same head, matcher, hard negative mining, loss and
box coding, and RefineDet's candidate rule at inference. It is RefineDet's object detection
module on the original anchors, without the anchor refinement module, the transfer connection
blocks and negative anchor filtering: the baseline that isolates what RefineDet adds.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import vgg as vgg_module

from workbench.errors import ConfigError
from workbench.losses import smooth_l1
from workbench.modeling.anchor_generator import Anchors
from workbench.modeling.assignment import HardNegativeSampler, SSDMatcher
from workbench.modeling.backbones import _vgg16_features, build_backbone
from workbench.modeling.dense import DenseDetector, SoftmaxLoss, SoftmaxPostprocess
from workbench.modeling.transform import ImageBatch, PerImageTransform, normalize
from workbench.ops import BoxCoder

#: torchvision's SSD300 input normalisation: mean in [0, 1] units, std 1/255 (the network sees
#: 0..255 pixel values minus the mean, as the Caffe SSD; ``ssd300_vgg16``).
SSD_MEAN = (0.48235, 0.45882, 0.40784)
SSD_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)

#: Extra layers ``(mid_channels, out_channels, kernel, stride, padding)`` after fc7.
#: SSD300: conv8_2 .. conv11_2 (paper Fig. 2; torchvision's ``SSDFeatureExtractorVGG``), maps
#: 10, 5, 3, 1 at 300 x 300.
SSD300_EXTRAS = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0), (128, 256, 3, 1, 0))
#: SSD512: five strided layers, the last a 4x4 conv with padding 1 (the authors' Caffe
#: ``ssd_pascal_512.py``), maps 16, 8, 4, 2, 1 at 512 x 512.
SSD512_EXTRAS = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 4, 1, 1))

#: torchvision ``ssd300_vgg16`` default boxes (its COCO setting).
SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
SSD300_STEPS = (8, 16, 32, 64, 100, 300)
SSD300_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
#: The authors' VOC settings (Caffe ``ssd_pascal.py``: min sizes 30, 60, 111, 162, 213, 264 and
#: max size 315 at 300; ``ssd_pascal_512.py``: 7% then 15% .. 90% in steps of 15%).
SSD300_VOC_SCALES = (0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05)
SSD512_VOC_SCALES = (0.07, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05)
SSD512_STEPS = (8, 16, 32, 64, 128, 256, 512)
SSD512_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))

#: The ratios (w / h) of :class:`OneSizeAnchors` at every location, in RefineDet's order: the
#: square first, then ratio 2 and its flip (Caffe ``PriorBox`` with ``aspect_ratio: 2, flip: true``).
ONE_SIZE_RATIOS = (1.0, 2.0, 0.5)

#: SSD's backbones: the paper's VGG-16 (:class:`SSDVGG`) and the miniature regime's light
#: backbone (:func:`light_source_maps`).
SSD_BACKBONES = ("vgg16", "mobilenet_v2_fpn")
#: How the post-processing picks its candidates (:class:`~workbench.modeling.dense.SoftmaxPostprocess`):
#: ``topk_candidates`` per class (SSD, torchvision) or over the (anchor, class) pairs of the image
#: (RefineDet).
CANDIDATE_RULES = ("per_class", "per_image")

_VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


@dataclass(frozen=True)
class SSDConfig:
    """Every setting of SSD; defaults equal torchvision's ``ssd300_vgg16`` (except
    ``num_classes``, which counts foreground classes here). ``width``, ``l2norm_scale``,
    ``fc_channels`` and ``extra_layers`` shape the VGG-16 only, ``backbone_norm`` and
    ``fpn_channels`` the MobileNetV2-FPN only; with ``anchor_sizes`` the anchors are
    :class:`OneSizeAnchors` (``anchor_sizes``, ``anchor_ratios``, ``anchor_steps`` as strides)
    and ``anchor_aspect_ratios`` / ``anchor_scales`` / ``anchor_clip`` are not used."""

    backbone: str = "vgg16"  # vgg16 | mobilenet_v2_fpn
    backbone_weights: str | None = None  # a VGG16_Weights member (IMAGENET1K_FEATURES) or a .pth
    trainable_backbone_layers: int = 5  # VGG blocks counted from conv5 (torchvision: 4 if pretrained)
    backbone_norm: str = "frozen_bn"  # mobilenet_v2_fpn: frozen_bn | bn
    fpn_channels: int = 128  # mobilenet_v2_fpn
    width: float = 1.0
    l2norm_scale: float = 20.0
    fc_channels: int = 1024
    extra_layers: tuple[tuple[int, int, int, int, int], ...] = SSD300_EXTRAS
    num_classes: int = 90
    # image transform: every image is resized to (size, size)
    size: int = 300
    image_mean: tuple[float, float, float] = SSD_MEAN
    image_std: tuple[float, float, float] = SSD_STD
    # default boxes: one tuple of ratios per level, len(levels) + 1 scales, steps (None: W / W_k)
    anchor_aspect_ratios: tuple[tuple[float, ...], ...] = SSD300_RATIOS
    anchor_scales: tuple[float, ...] = SSD300_SCALES
    anchor_steps: tuple[int, ...] | None = SSD300_STEPS
    anchor_clip: bool = True
    # anchors of one size per level (None: the default boxes above), the same ratios everywhere
    anchor_sizes: tuple[float, ...] | None = None
    anchor_ratios: tuple[float, ...] = ONE_SIZE_RATIOS
    # training targets and loss
    iou_thresh: float = 0.5
    neg_pos_ratio: float = 3.0
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # variances 0.1, 0.1, 0.2, 0.2
    smooth_l1_beta: float = 1.0
    cls_loss_weight: float = 1.0
    box_loss_weight: float = 1.0
    # post-processing
    score_thresh: float = 0.01
    topk_candidates: int = 400
    candidates: str = "per_class"  # per_class | per_image (see CANDIDATE_RULES)
    nms_thresh: float = 0.45
    detections_per_img: int = 200
    box_decode_clamp: float = math.log(1000.0 / 16)


class L2Norm(nn.Module):
    """Per-location L2 normalisation over channels times a learnable per-channel scale:
    ``weight[c] * x[:, c] / max(||x[:, :, y, x]||, 1e-12)``."""

    def __init__(self, channels: int, scale: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.weight.view(1, -1, 1, 1) * F.normalize(x)


def _xavier(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width)))


def _vgg_features(weights: str | None, width: float) -> nn.Sequential:
    """``vgg16().features`` (with ``weights``) or, for ``width != 1``, the same layout with every
    channel count scaled (random initialisation as torchvision's VGG)."""
    if width == 1.0:
        return _vgg16_features(weights)
    if weights is not None:
        raise ConfigError("pretrained VGG-16 weights need width 1.0")
    layout = [c if c == "M" else _scaled(int(c), width) for c in _VGG16_CHANNELS]
    features = vgg_module.make_layers(layout, batch_norm=False)
    for layer in features.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return features


class SSDVGG(nn.Module):
    """The SSD feature extractor (see the module docstring): ``(N, 3, H, W)`` -> ordered dict
    ``"0", "1", ...`` of the source maps. ``out_channels`` lists each level's channels."""

    def __init__(
        self,
        features: nn.Sequential,
        extra_layers: Sequence[tuple[int, int, int, int, int]],
        width: float = 1.0,
        fc_channels: int = 1024,
        l2norm_scale: float = 20.0,
    ) -> None:
        super().__init__()
        pools = [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
        if len(pools) != 5:
            raise ValueError(f"expected the 5 max-pool layers of VGG, got {len(pools)}")
        features[pools[2]].ceil_mode = True  # pool3: 75 -> 38 at 300 x 300, as the paper
        convs = [layer for layer in features if isinstance(layer, nn.Conv2d)]
        conv4_channels, conv5_channels = convs[9].out_channels, convs[12].out_channels
        fc = _scaled(fc_channels, width)
        self.conv4_3 = nn.Sequential(*features[: pools[3]])
        self.l2norm = L2Norm(conv4_channels, l2norm_scale)
        fc6 = nn.Conv2d(conv5_channels, fc, kernel_size=3, padding=6, dilation=6)
        fc7 = nn.Conv2d(fc, fc, kernel_size=1)
        _xavier(fc6)
        _xavier(fc7)
        self.fc7 = nn.Sequential(
            *features[pools[3]: pools[4]],  # pool4, conv5_1 .. relu5_3
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),  # pool5
            fc6, nn.ReLU(inplace=True), fc7, nn.ReLU(inplace=True),
        )
        extras, channels = [], [conv4_channels, fc]
        in_channels = fc
        for mid, out, kernel, stride, padding in extra_layers:
            mid, out = _scaled(mid, width), _scaled(out, width)
            block = nn.Sequential(
                nn.Conv2d(in_channels, mid, kernel_size=1), nn.ReLU(inplace=True),
                nn.Conv2d(mid, out, kernel_size=kernel, stride=stride, padding=padding), nn.ReLU(inplace=True),
            )
            _xavier(block)
            extras.append(block)
            channels.append(out)
            in_channels = out
        self.extras = nn.ModuleList(extras)
        self.out_channels = channels
        self.feature_names = tuple(str(i) for i in range(len(channels)))

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.conv4_3(images)
        outputs = [self.l2norm(x)]
        x = self.fc7(x)
        outputs.append(x)
        for block in self.extras:
            x = block(x)
            outputs.append(x)
        return OrderedDict(zip(self.feature_names, outputs))


def freeze_vgg_blocks(features: nn.Sequential, trainable_layers: int) -> None:
    """Freeze every VGG block below the top ``trainable_layers`` of the five (torchvision's SSD
    rule: block starts are the first layer and each max-pool but the last)."""
    starts = [0] + [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)][:-1]
    if not 0 <= trainable_layers <= len(starts):
        raise ConfigError(f"trainable_backbone_layers for SSD's VGG must be in [0, {len(starts)}], got {trainable_layers}")
    freeze_before = len(features) if trainable_layers == 0 else starts[len(starts) - trainable_layers]
    for layer in features[:freeze_before]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)


class DefaultBoxes(Anchors):
    """SSD default boxes (see the module docstring); holds no tensors.

    Called like :class:`~workbench.modeling.AnchorGenerator`: ``(padded_size, feature_sizes,
    dtype, device) -> [per level (H_l W_l A_l, 4)]`` xyxy, in (y, x, box) order.
    """

    def __init__(
        self,
        aspect_ratios: Sequence[Sequence[float]],
        scales: Sequence[float],
        steps: Sequence[int] | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__()
        if len(scales) != len(aspect_ratios) + 1:
            raise ValueError(f"{len(aspect_ratios)} levels need {len(aspect_ratios) + 1} scales, got {len(scales)}")
        if steps is not None and len(steps) != len(aspect_ratios):
            raise ValueError(f"{len(aspect_ratios)} levels but {len(steps)} steps")
        self.aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)
        self.scales = tuple(float(s) for s in scales)
        self.steps = None if steps is None else tuple(int(s) for s in steps)
        self.clip = clip

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def relative_sizes(self, level: int) -> list[tuple[float, float]]:
        """``(w, h)`` of the level's boxes relative to the image, before clipping."""
        s_k, s_next = self.scales[level], self.scales[level + 1]
        prime = math.sqrt(s_k * s_next)
        sizes = [(s_k, s_k), (prime, prime)]
        for ratio in self.aspect_ratios[level]:
            root = math.sqrt(ratio)
            sizes += [(s_k * root, s_k / root), (s_k / root, s_k * root)]
        return sizes

    def anchors(self, padded_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]], dtype: torch.dtype,
                device: torch.device | str) -> list[Tensor]:
        height, width = int(padded_size[0]), int(padded_size[1])
        image_wh = torch.tensor([width, height], device=device)
        out = []
        for level, (f_h, f_w) in enumerate(feature_sizes):
            if self.steps is not None:
                x_cells, y_cells = width / self.steps[level], height / self.steps[level]
            else:
                y_cells, x_cells = int(f_h), int(f_w)
            cx = ((torch.arange(int(f_w), device=device) + 0.5) / x_cells).to(dtype)
            cy = ((torch.arange(int(f_h), device=device) + 0.5) / y_cells).to(dtype)
            grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
            wh = torch.as_tensor(self.relative_sizes(level), dtype=dtype, device=device)
            if self.clip:
                wh = wh.clamp(min=0, max=1)
            centres = torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=1)[:, None, :]  # (HW, 1, 2)
            half = 0.5 * wh[None]  # (1, A, 2)
            boxes = torch.cat(((centres - half) * image_wh, (centres + half) * image_wh), dim=-1)
            out.append(boxes.reshape(-1, 4))
        return out


class OneSizeAnchors(Anchors):
    """RefineDet's anchors (Zhang et al., CVPR 2018, section 2.2 "Anchors Design and Matching"):
    one size per level and the same ratios (w / h) at every location, centred at ``((x + 0.5)
    * stride, (y + 0.5) * stride)``; a box of size ``s`` and ratio ``r`` is ``s sqrt(r)`` wide
    and ``s / sqrt(r)`` high. Called like :class:`DefaultBoxes`. ``strides=None`` takes each
    level's stride as ``padded / feature size``."""

    def __init__(self, sizes: Sequence[float], ratios: Sequence[float] = ONE_SIZE_RATIOS,
                 strides: Sequence[int] | None = None) -> None:
        super().__init__()
        if strides is not None and len(strides) != len(sizes):
            raise ValueError(f"{len(sizes)} anchor sizes but {len(strides)} strides")
        self.sizes = tuple(float(s) for s in sizes)
        self.ratios = tuple(float(r) for r in ratios)
        self.strides = None if strides is None else tuple(float(s) for s in strides)

    def num_anchors_per_location(self) -> list[int]:
        return [len(self.ratios)] * len(self.sizes)

    def anchors(self, padded_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]], dtype: torch.dtype,
                device: torch.device | str) -> list[Tensor]:
        out = []
        for level, (f_h, f_w) in enumerate(feature_sizes):
            if self.strides is not None:
                step_y = step_x = self.strides[level]
            else:
                step_y, step_x = padded_size[0] / f_h, padded_size[1] / f_w
            cx = (torch.arange(int(f_w), device=device, dtype=torch.float64) + 0.5) * step_x
            cy = (torch.arange(int(f_h), device=device, dtype=torch.float64) + 0.5) * step_y
            grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
            centres = torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=1)[:, None, :]  # (HW, 1, 2)
            size = self.sizes[level]
            wh = torch.tensor([(size * math.sqrt(r), size / math.sqrt(r)) for r in self.ratios],
                              dtype=torch.float64, device=device)[None]  # (1, A, 2)
            boxes = torch.cat((centres - 0.5 * wh, centres + 0.5 * wh), dim=-1)
            out.append(boxes.reshape(-1, 4).to(dtype))
        return out


class SourceMaps(nn.Module):
    """An FPN feature extractor whose ``out_channels`` lists each level's channels (as
    :class:`SSDVGG`'s), so that the per-level heads read it like any SSD backbone."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        self.out_channels = [int(extractor.out_channels)] * len(extractor.feature_names)

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        return self.extractor(images)


def light_source_maps(weights: str | None, trainable_layers: int, fpn_channels: int, norm: str) -> SourceMaps:
    """The miniature regime's light backbone as four source maps: MobileNetV2 stages at strides
    8, 16, 32 with an FPN of ``fpn_channels`` and its max-pooled stride-64 level (the baseline
    Faster R-CNN's ``tiny`` backbone; :func:`~workbench.modeling.backbones.build_backbone`)."""
    return SourceMaps(build_backbone("mobilenet_v2_fpn", weights, trainable_layers, fpn_channels, norm, (2, 3, 4)))


class SSDHead(nn.Module):
    """One 3x3 conv per level for the class logits (``A_l * K``) and one for the offsets
    (``4 A_l``), Xavier-initialised (torchvision's ``SSDHead``)."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes_with_background: int) -> None:
        super().__init__()
        self.cls_logits = nn.ModuleList(
            nn.Conv2d(c, a * num_classes_with_background, kernel_size=3, padding=1) for c, a in zip(in_channels, num_anchors)
        )
        self.bbox_pred = nn.ModuleList(nn.Conv2d(c, a * 4, kernel_size=3, padding=1) for c, a in zip(in_channels, num_anchors))
        _xavier(self)

    def forward(self, features: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        if len(features) != len(self.cls_logits):
            raise ValueError(f"SSD head has {len(self.cls_logits)} levels, got {len(features)} feature maps")
        return {
            "cls_logits": [conv(f) for conv, f in zip(self.cls_logits, features)],
            "deltas": [conv(f) for conv, f in zip(self.bbox_pred, features)],
        }


class FixedSizeTransform(PerImageTransform):
    """Normalise ``(image - mean) / std`` and resize bilinearly to ``size`` (h, w), whatever the
    aspect ratio (torchvision's SSD transform); targets' boxes are scaled the same way."""

    def __init__(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def _resize(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        normalised = normalize(image, self.mean, self.std)
        return F.interpolate(normalised[None], size=self.size, mode="bilinear", align_corners=False)[0]

    def _batch(self, resized: list[Tensor], original_sizes: list[tuple[int, int]]) -> ImageBatch:
        return ImageBatch(torch.stack(resized), [self.size] * len(resized), original_sizes)


def build_ssd_backbone(cfg: SSDConfig) -> nn.Module:
    """The source maps of ``cfg.backbone``; the module's ``out_channels`` lists their channels."""
    if cfg.backbone == "vgg16":
        features = _vgg_features(cfg.backbone_weights, cfg.width)
        freeze_vgg_blocks(features, cfg.trainable_backbone_layers)
        return SSDVGG(features, cfg.extra_layers, cfg.width, cfg.fc_channels, cfg.l2norm_scale)
    if cfg.backbone == "mobilenet_v2_fpn":
        return light_source_maps(cfg.backbone_weights, cfg.trainable_backbone_layers, cfg.fpn_channels,
                                 cfg.backbone_norm)
    raise ConfigError(f"unknown SSD backbone {cfg.backbone!r}; choose one of {', '.join(SSD_BACKBONES)}")


def build_ssd_anchors(cfg: SSDConfig, num_levels: int) -> nn.Module:
    """SSD's default boxes, or :class:`OneSizeAnchors` when ``cfg.anchor_sizes`` is given; one
    description per source level."""
    if cfg.anchor_sizes is not None:
        if len(cfg.anchor_sizes) != num_levels:
            raise ConfigError(f"the backbone has {num_levels} source levels but anchor_sizes has {len(cfg.anchor_sizes)}")
        return OneSizeAnchors(cfg.anchor_sizes, cfg.anchor_ratios, cfg.anchor_steps)
    if len(cfg.anchor_aspect_ratios) != num_levels:
        raise ConfigError(
            f"SSD has {num_levels} source levels (2 + {len(cfg.extra_layers)} extra layers with VGG-16) but "
            f"anchor_aspect_ratios has {len(cfg.anchor_aspect_ratios)}"
        )
    return DefaultBoxes(cfg.anchor_aspect_ratios, cfg.anchor_scales, cfg.anchor_steps, cfg.anchor_clip)


def build_ssd(cfg: SSDConfig) -> DenseDetector:
    """Build the SSD described by ``cfg``."""
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes counts foreground classes and must be >= 1, got {cfg.num_classes}")
    if cfg.candidates not in CANDIDATE_RULES:
        raise ConfigError(f"candidates must be one of {', '.join(CANDIDATE_RULES)}, got {cfg.candidates!r}")
    backbone = build_ssd_backbone(cfg)
    anchors = build_ssd_anchors(cfg, len(backbone.out_channels))
    head = SSDHead(backbone.out_channels, anchors.num_anchors_per_location(), cfg.num_classes + 1)
    box_coder = BoxCoder(weights=cfg.box_weights, clamp=cfg.box_decode_clamp)
    return DenseDetector(
        FixedSizeTransform((cfg.size, cfg.size), cfg.image_mean, cfg.image_std),
        backbone,
        head,
        anchors,
        box_coder=box_coder,
        matcher=SSDMatcher(cfg.iou_thresh),
        sampler=HardNegativeSampler(cfg.neg_pos_ratio),
        loss=SoftmaxLoss(
            box_loss=functools.partial(smooth_l1, beta=cfg.smooth_l1_beta),
            cls_weight=cfg.cls_loss_weight, box_weight=cfg.box_loss_weight,
        ),
        postprocess=SoftmaxPostprocess(
            box_coder, score_thresh=cfg.score_thresh, topk_candidates=cfg.topk_candidates,
            nms_thresh=cfg.nms_thresh, detections_per_image=cfg.detections_per_img,
            per_class=cfg.candidates == "per_class",
        ),
    )
