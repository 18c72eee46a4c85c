"""Interoperability with torchvision's single-stage detectors: same architecture, weights carried over.

- :func:`load_torchvision_retinanet` reads a torchvision ``RetinaNet`` with a ResNet-50-FPN or
  ResNet-18-FPN backbone over C3..C5 and ``LastLevelP6P7`` (``retinanet_resnet50_fpn``);
- :func:`load_torchvision_ssd` reads a torchvision ``SSD`` with the VGG-16 feature extractor
  (``ssd300_vgg16``).

Each builds the workbench :class:`DenseDetector` with the same settings, loads the weights, and
in evaluation mode gives the same detections on the same images. torchvision's batch norm
(``BatchNorm2d`` when built without pretrained weights) becomes frozen batch norm with the same
statistics, which is what it computes in evaluation mode.

Conventions: torchvision counts the background in ``num_classes``; the workbench does not. Both
loaders build torchvision's logit layout: RetinaNet with ``background_column=True`` (its column
0 is a background class that is never trained, but it is scored like the others, so a
detection may carry label 0 exactly as torchvision's would); SSD's softmax column 0 is the
background in both.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from workbench.errors import ConfigError
from workbench.modeling.dense import DenseDetector
from workbench.modeling.retinanet import RetinaNetConfig, build_retinanet
from workbench.modeling.ssd import SSDConfig, build_ssd
from workbench.modeling.torchvision_compat import (
    _normalization_fields,
    _resnet_name,
    _same_aspect_ratios,
    _trainable_layers,
    _transform_fields,
)

# torchvision RetinaNet key pattern -> workbench key template, first match wins.
_RETINANET_KEYS = (
    (r"^backbone\.fpn\.(.*)$", r"backbone.neck.\1"),
    (r"^backbone\.body\.(.*)$", r"backbone.body.\1"),
    (r"^head\.classification_head\.conv\.(\d+)\.0\.(.*)$", "head.cls_subnet.{2x}.\\2"),
    (r"^head\.regression_head\.conv\.(\d+)\.0\.(.*)$", "head.box_subnet.{2x}.\\2"),
    (r"^head\.classification_head\.cls_logits\.(.*)$", r"head.cls_logits.\1"),
    (r"^head\.regression_head\.bbox_reg\.(.*)$", r"head.bbox_pred.\1"),
)


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str:
    for pattern, template in table:
        match = re.match(pattern, key)
        if match is None:
            continue
        if "{2x}" in template:
            template = template.replace("{2x}", str(2 * int(match.group(1))))
        return match.expand(template)
    raise ConfigError(f"torchvision state key {key!r} has no workbench counterpart")


def _convert(state: "OrderedDict[str, torch.Tensor]", table: tuple[tuple[str, str], ...]) -> "OrderedDict[str, torch.Tensor]":
    """Rename a torchvision state dict with ``table`` (drops batch-norm step counters)."""
    return OrderedDict((_rename(k, table), v) for k, v in state.items() if not k.endswith("num_batches_tracked"))


def _finish(model: nn.Module, tv_model: nn.Module, state: "OrderedDict[str, torch.Tensor]") -> nn.Module:
    model.load_state_dict(state)
    device = next(tv_model.parameters()).device
    return model.to(device).train(tv_model.training)


def _coder_and_postprocess(tv_model: nn.Module) -> dict[str, Any]:
    """The config fields that torchvision's ``RetinaNet`` and ``SSD`` hold in the same
    attributes: the box coder's and the post-processing's."""
    return dict(
        box_weights=tuple(float(w) for w in tv_model.box_coder.weights),
        score_thresh=float(tv_model.score_thresh),
        topk_candidates=int(tv_model.topk_candidates),
        nms_thresh=float(tv_model.nms_thresh),
        detections_per_img=int(tv_model.detections_per_img),
        box_decode_clamp=float(tv_model.box_coder.bbox_xform_clip),
    )


def _dense_config(config_type: type, tv_model: nn.Module, overrides: dict[str, Any], **values: Any):
    """``config_type`` from the detector's own ``values``, the fields torchvision's ``RetinaNet``
    and ``SSD`` share (:func:`_coder_and_postprocess`), and the caller's ``overrides`` last."""
    return config_type(**{**values, **_coder_and_postprocess(tv_model), **overrides})


def retinanet_config_from_torchvision(tv_model: nn.Module, **overrides: Any) -> RetinaNetConfig:
    """A :class:`RetinaNetConfig` with every setting of a torchvision ``RetinaNet``."""
    body, fpn = tv_model.backbone.body, tv_model.backbone.fpn
    extra = getattr(fpn, "extra_blocks", None)
    if type(extra).__name__ != "LastLevelP6P7" or not getattr(extra, "use_P5", False):
        raise ConfigError("the workbench RetinaNet computes P6 / P7 from P5 (torchvision's LastLevelP6P7(256, 256))")
    returned = tuple(int(name[len("layer"):]) for name in body.return_layers)
    generator = tv_model.anchor_generator
    aspect_ratios = _same_aspect_ratios(generator)
    head = tv_model.head
    cls_head, reg_head = head.classification_head, head.regression_head
    for conv in list(cls_head.conv) + list(reg_head.conv):
        if len(conv) != 2:  # Conv2dNormActivation without a norm layer: conv + ReLU
            raise ConfigError("the workbench RetinaNet head has no normalisation layers (torchvision's v2 head has)")
    if getattr(reg_head, "_loss_type", "l1") != "l1":
        raise ConfigError(f"unsupported RetinaNet box loss {reg_head._loss_type!r}")
    matcher = tv_model.proposal_matcher
    return _dense_config(
        RetinaNetConfig, tv_model, overrides,
        backbone=_resnet_name(body),
        trainable_backbone_layers=_trainable_layers(body),
        backbone_returned_layers=returned,
        fpn_channels=int(tv_model.backbone.out_channels),
        num_classes=int(cls_head.num_classes) - 1,
        background_column=True,
        **_transform_fields(tv_model.transform),
        anchor_sizes=tuple(tuple(float(s) for s in level) for level in generator.sizes),
        anchor_aspect_ratios=aspect_ratios,
        head_num_convs=len(cls_head.conv),
        fg_iou_thresh=float(matcher.high_threshold),
        bg_iou_thresh=float(matcher.low_threshold),
        allow_low_quality_matches=bool(matcher.allow_low_quality_matches),
    )


def load_torchvision_retinanet(tv_model: nn.Module, **overrides: Any) -> DenseDetector:
    """Build a workbench RetinaNet equal to a torchvision ``RetinaNet`` (e.g.
    ``retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=K)``) and load its
    weights. ``overrides`` replace config fields. The result is in the same train / eval mode as
    ``tv_model`` and on its device."""
    cfg = retinanet_config_from_torchvision(tv_model, **overrides)
    model = build_retinanet(cfg)
    return _finish(model, tv_model, _convert(tv_model.state_dict(), _RETINANET_KEYS))


def _ssd_key(key: str) -> str:
    """torchvision ``SSD`` (VGG-16) key -> workbench key."""
    if key == "backbone.scale_weight":
        return "backbone.l2norm.weight"
    rules = (
        (r"^backbone\.features\.(\d+)\.(.*)$", lambda m: f"backbone.conv4_3.{m[1]}.{m[2]}"),
        # fc (pool5, fc6, ReLU, fc7, ReLU) nested at position 7 of torchvision's first block
        (r"^backbone\.extra\.0\.7\.(\d+)\.(.*)$", lambda m: f"backbone.fc7.{7 + int(m[1])}.{m[2]}"),
        (r"^backbone\.extra\.0\.(\d+)\.(.*)$", lambda m: f"backbone.fc7.{m[1]}.{m[2]}"),
        (r"^backbone\.extra\.(\d+)\.(.*)$", lambda m: f"backbone.extras.{int(m[1]) - 1}.{m[2]}"),
        (r"^head\.classification_head\.module_list\.(.*)$", lambda m: f"head.cls_logits.{m[1]}"),
        (r"^head\.regression_head\.module_list\.(.*)$", lambda m: f"head.bbox_pred.{m[1]}"),
    )
    for pattern, rename in rules:
        match = re.match(pattern, key)
        if match is not None:
            return rename(match)
    raise ConfigError(f"torchvision state key {key!r} has no workbench counterpart")


def _ssd_extra_layers(extra: nn.ModuleList) -> tuple[tuple[int, int, int, int, int], ...]:
    layers = []
    for block in list(extra)[1:]:
        first, second = block[0], block[2]
        layers.append((
            int(first.out_channels), int(second.out_channels), int(second.kernel_size[0]), int(second.stride[0]),
            int(second.padding[0]),
        ))
    return tuple(layers)


def _ssd_trainable_blocks(backbone: nn.Module) -> int:
    """How many of VGG-16's five conv blocks, counted from conv5, have trainable weights
    (torchvision's ``trainable_backbone_layers`` of ``ssd300_vgg16``)."""
    convs = [m for m in backbone.features if isinstance(m, nn.Conv2d)]
    convs += [m for m in list(backbone.extra[0])[:-1] if isinstance(m, nn.Conv2d)]  # conv5_x, not fc6 / fc7
    blocks, start = [], 0
    for size in (2, 2, 3, 3, 3):
        blocks.append(convs[start:start + size])
        start += size
    count = 0
    for block in reversed(blocks):
        if not any(p.requires_grad for conv in block for p in conv.parameters()):
            break
        count += 1
    return count


def ssd_config_from_torchvision(tv_model: nn.Module, **overrides: Any) -> SSDConfig:
    """An :class:`SSDConfig` with every setting of a torchvision ``SSD`` with the VGG-16 extractor."""
    backbone = tv_model.backbone
    if type(backbone).__name__ != "SSDFeatureExtractorVGG":
        raise ConfigError(f"unsupported SSD backbone {type(backbone).__name__}; use torchvision's VGG-16 extractor")
    transform = tv_model.transform
    fixed = transform.fixed_size
    if fixed is None or int(fixed[0]) != int(fixed[1]):
        raise ConfigError(f"the workbench SSD resizes to a square input, torchvision's has fixed_size {fixed}")
    generator = tv_model.anchor_generator
    head = tv_model.head
    num_classes = int(head.classification_head.num_columns)
    matcher = tv_model.proposal_matcher
    fc6 = backbone.extra[0][7][1]
    return _dense_config(
        SSDConfig, tv_model, overrides,
        trainable_backbone_layers=_ssd_trainable_blocks(backbone),
        width=1.0,
        l2norm_scale=20.0,
        fc_channels=int(fc6.out_channels),
        extra_layers=_ssd_extra_layers(backbone.extra),
        num_classes=num_classes - 1,
        size=int(fixed[0]),
        **_normalization_fields(transform),
        anchor_aspect_ratios=tuple(tuple(float(r) for r in level) for level in generator.aspect_ratios),
        anchor_scales=tuple(float(s) for s in generator.scales),
        anchor_steps=None if generator.steps is None else tuple(int(s) for s in generator.steps),
        anchor_clip=bool(generator.clip),
        iou_thresh=float(matcher.high_threshold),
        neg_pos_ratio=float(tv_model.neg_to_pos_ratio),
    )


def load_torchvision_ssd(tv_model: nn.Module, **overrides: Any) -> DenseDetector:
    """Build a workbench SSD equal to a torchvision ``SSD`` (e.g. ``ssd300_vgg16(weights=None,
    weights_backbone=None, num_classes=K)``) and load its weights. ``overrides`` replace config
    fields. The result is in the same train / eval mode as ``tv_model`` and on its device."""
    cfg = ssd_config_from_torchvision(tv_model, **overrides)
    model = build_ssd(cfg)
    state = OrderedDict((_ssd_key(k), v) for k, v in tv_model.state_dict().items())
    return _finish(model, tv_model, state)
