"""Interoperability with torchvision's ``FasterRCNN``: same architecture, weights carried over.

:func:`load_torchvision_faster_rcnn` reads a torchvision ``FasterRCNN`` with a ResNet-50-FPN or
ResNet-18-FPN backbone (e.g. ``fasterrcnn_resnet50_fpn(weights=...)`` or one built with
``resnet_fpn_backbone``), builds the workbench model with the same settings and loads its state.
In evaluation mode both give the same detections on the same images. torchvision's batch norm
layers (``BatchNorm2d`` when built without backbone weights) become frozen batch norm with the
same statistics, which is what they compute in evaluation mode.

Conventions: torchvision counts the background in ``num_classes``; the workbench does not.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from workbench.errors import ConfigError
from workbench.modeling.faster_rcnn import FasterRCNN, FasterRCNNConfig, build_faster_rcnn

# torchvision key prefix -> workbench key prefix, first match wins.
_KEY_PREFIXES = (
    ("backbone.fpn.", "backbone.neck."),
    ("rpn.head.conv.0.0.", "rpn.head.conv."),
    ("roi_heads.box_predictor.", "roi_heads.box_predictor."),
    ("roi_heads.box_head.", "roi_heads.box_head."),
    ("rpn.head.", "rpn.head."),
    ("backbone.body.", "backbone.body."),
)


def _normalization_fields(transform: nn.Module) -> dict[str, tuple[float, ...]]:
    """``image_mean`` and ``image_std`` of a torchvision detection transform."""
    return dict(image_mean=tuple(float(m) for m in transform.image_mean),
                image_std=tuple(float(s) for s in transform.image_std))


def _transform_fields(transform: nn.Module) -> dict[str, Any]:
    """The config fields of a torchvision ``GeneralizedRCNNTransform`` (Faster R-CNN's and
    RetinaNet's): the resize sizes, the normalisation and the padding multiple."""
    min_size = tuple(int(s) for s in transform.min_size)
    return dict(min_size=min_size[0] if len(min_size) == 1 else min_size, max_size=int(transform.max_size),
                **_normalization_fields(transform), size_divisible=int(transform.size_divisible))


def _same_aspect_ratios(generator: nn.Module) -> tuple[float, ...]:
    """The aspect ratios of a torchvision ``AnchorGenerator``; the workbench's take the same
    ratios on every level, so a generator with different ones is refused."""
    ratios = {tuple(float(r) for r in level) for level in generator.aspect_ratios}
    if len(ratios) != 1:
        raise ConfigError("the workbench uses the same anchor aspect ratios on every level")
    return next(iter(ratios))


def _resnet_name(body: nn.Module) -> str:
    blocks = tuple(len(getattr(body, f"layer{i}")) for i in range(1, 5))
    bottleneck = hasattr(body.layer1[0], "conv3")
    if bottleneck and blocks == (3, 4, 6, 3):
        return "resnet50_fpn"
    if not bottleneck and blocks == (2, 2, 2, 2):
        return "resnet18_fpn"
    raise ConfigError(f"unsupported torchvision backbone: ResNet with blocks {blocks}; use ResNet-50 or ResNet-18")


def _trainable_layers(body: nn.Module) -> int:
    """How many of (layer4, layer3, layer2, layer1, conv1) have trainable parameters."""
    count = 0
    for name in ("layer4", "layer3", "layer2", "layer1", "conv1"):
        if not any(p.requires_grad for p in getattr(body, name).parameters()):
            break
        count += 1
    return count


def config_from_torchvision(tv_model: nn.Module, **overrides: Any) -> FasterRCNNConfig:
    """A :class:`FasterRCNNConfig` with every setting of a torchvision ``FasterRCNN``."""
    rpn, roi = tv_model.rpn, tv_model.roi_heads
    body = tv_model.backbone.body
    pool = roi.box_roi_pool
    values = dict(
        backbone=_resnet_name(body),
        trainable_backbone_layers=_trainable_layers(body),
        fpn_channels=int(tv_model.backbone.out_channels),
        num_classes=int(roi.box_predictor.cls_score.out_features) - 1,
        **_transform_fields(tv_model.transform),
        anchor_sizes=tuple(tuple(float(s) for s in level) for level in rpn.anchor_generator.sizes),
        anchor_aspect_ratios=_same_aspect_ratios(rpn.anchor_generator),
        rpn_box_weights=tuple(float(w) for w in rpn.box_coder.weights),
        rpn_fg_iou_thresh=float(rpn.proposal_matcher.high_threshold),
        rpn_bg_iou_thresh=float(rpn.proposal_matcher.low_threshold),
        rpn_allow_low_quality_matches=bool(rpn.proposal_matcher.allow_low_quality_matches),
        rpn_batch_size_per_image=int(rpn.fg_bg_sampler.batch_size_per_image),
        rpn_positive_fraction=float(rpn.fg_bg_sampler.positive_fraction),
        rpn_pre_nms_top_n_train=int(rpn._pre_nms_top_n["training"]),
        rpn_pre_nms_top_n_test=int(rpn._pre_nms_top_n["testing"]),
        rpn_post_nms_top_n_train=int(rpn._post_nms_top_n["training"]),
        rpn_post_nms_top_n_test=int(rpn._post_nms_top_n["testing"]),
        rpn_nms_thresh=float(rpn.nms_thresh),
        rpn_min_size=float(rpn.min_size),
        rpn_score_thresh=float(rpn.score_thresh),
        roi_featmap_names=tuple(pool.featmap_names),
        roi_output_size=int(pool.output_size[0]),
        roi_sampling_ratio=int(pool.sampling_ratio),
        box_representation_size=int(roi.box_head.fc7.out_features),
        box_weights=tuple(float(w) for w in roi.box_coder.weights),
        box_fg_iou_thresh=float(roi.proposal_matcher.high_threshold),
        box_bg_iou_thresh=float(roi.proposal_matcher.low_threshold),
        box_batch_size_per_image=int(roi.fg_bg_sampler.batch_size_per_image),
        box_positive_fraction=float(roi.fg_bg_sampler.positive_fraction),
        box_score_thresh=float(roi.score_thresh),
        box_nms_thresh=float(roi.nms_thresh),
        box_detections_per_img=int(roi.detections_per_img),
        box_decode_clamp=float(roi.box_coder.bbox_xform_clip),
    )
    values.update(overrides)
    return FasterRCNNConfig(**values)


def convert_torchvision_state_dict(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """Rename a torchvision ``FasterRCNN`` state dict to workbench keys (drops BN step counters)."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for old, new in _KEY_PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise ConfigError(f"torchvision state key {key!r} has no workbench counterpart")
    return out


def load_torchvision_faster_rcnn(tv_model: nn.Module, **overrides: Any) -> FasterRCNN:
    """Build a workbench :class:`FasterRCNN` equal to a torchvision ``FasterRCNN`` and load its
    weights. ``overrides`` replace config fields (e.g. ``box_score_thresh``). The result is in
    the same train/eval mode as ``tv_model`` and on its device."""
    cfg = config_from_torchvision(tv_model, **overrides)
    model = build_faster_rcnn(cfg)
    model.load_state_dict(convert_torchvision_state_dict(tv_model.state_dict()))
    device = next(tv_model.parameters()).device
    return model.to(device).train(tv_model.training)

