"""Libra R-CNN (Pang et al., "Libra R-CNN: Towards Balanced Learning for Object Detection",
CVPR 2019): what differs from Faster R-CNN and from RetinaNet.

Three components, each switched on or off in the config, each passed to the baseline's builder
as a part (the built model is never edited):

- **IoU-balanced sampling** (section 3.1): the box stage's sampler becomes
  :class:`IoUBalancedSampler` (instance-balanced positives, negatives drawn evenly from ``K``
  equal IoU bins over the negatives' own range, ``workbench.ops.sample_libra``); R-CNN only
  (RetinaNet samples nothing);
- **balanced feature pyramid** (section 3.2): the neck
  :class:`~workbench.modeling.balanced_pyramid.BalancedFeaturePyramid` after the FPN;
- **balanced L1 loss** (section 3.3): :func:`workbench.losses.balanced_l1` as the element-wise
  box regression loss (R-CNN: the box stage's; RetinaNet: the dense head's, ``beta = 0.11``).

With every switch off the model is the baseline's, module for module.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch
from torch import Tensor

from workbench.errors import ConfigError
from workbench.losses import balanced_l1
from workbench.modeling import FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from workbench.modeling.assignment import Assignment, Sampler
from workbench.modeling.backbones import FeatureExtractor
from workbench.modeling.balanced_pyramid import REFINE_TYPES, BalancedFeaturePyramid
from workbench.modeling.dense import DenseDetector
from workbench.modeling.retinanet import RetinaNetConfig, build_retinanet
from workbench.ops import sample_libra

#: The paper both Libra methods follow (``libra_rcnn``, ``libra_retinanet``).
PAPER = "Libra R-CNN: Towards Balanced Learning for Object Detection (Pang et al., CVPR 2019)"


@dataclass(frozen=True)
class IoUBalancedSampler(Sampler):
    """Libra R-CNN's sampler (:class:`~workbench.modeling.assignment.Sampler`):
    ``min(int(num_samples * positive_fraction), #pos)`` positives, instance-balanced (each GT
    gives up to its share) or, with ``positive_balance=False``, uniform; negatives fill the rest,
    balanced over ``num_bins`` equal bins of the negatives' own best-IoU range (``num_bins=1``:
    uniform). ``floor_thr`` / ``floor_fraction``: see
    :func:`workbench.ops.sampling.sample_iou_balanced_negative` (off by default, as in the
    paper's configuration). Stateless; ``losses`` is accepted and not used."""

    num_samples: int
    positive_fraction: float
    num_bins: int = 3
    positive_balance: bool = True
    floor_thr: float = -1.0
    floor_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.num_bins < 1:
            raise ConfigError(f"the IoU-balanced sampler needs num_bins >= 1, got {self.num_bins}")

    def sample(self, assignment: Assignment, generator: torch.Generator | None,
               losses: Tensor | None) -> tuple[Tensor, Tensor]:
        # Instance balance over a single "instance" is a uniform draw of the positives.
        instance = assignment.matched_gt if self.positive_balance else torch.zeros_like(assignment.matched_gt)
        return sample_libra(
            assignment.labels, assignment.max_iou, instance, self.num_samples, self.positive_fraction, generator,
            self.num_bins, self.floor_thr, self.floor_fraction,
        )


@dataclass(frozen=True)
class BalancedComponents:
    """The two Libra components every detector takes, with mmdetection's
    ``libra_faster_rcnn_r50_fpn_1x`` settings (:class:`LibraRetinaNetConfig` changes two):
    ``balanced_pyramid`` integrated at level ``refine_level`` (2: P4 of P2-P6) and refined by
    ``refine_type`` (``non_local``, the paper's, ``conv`` or ``none``); ``balanced_l1`` for the
    box regression with ``alpha``, ``gamma`` (paper: 0.5, 1.5, the best of its loss ablation,
    37.2 AP) and ``beta`` (1.0, the authors' configuration)."""

    balanced_pyramid: bool = True
    refine_level: int = 2
    refine_type: str = "non_local"
    balanced_l1: bool = True
    alpha: float = 0.5
    gamma: float = 1.5
    beta: float = 1.0

    def __post_init__(self) -> None:
        if self.refine_type not in REFINE_TYPES:
            raise ConfigError(f"unknown refine_type {self.refine_type!r}; use one of {', '.join(REFINE_TYPES)}")
        if not (self.alpha > 0 and self.gamma > 0 and self.beta > 0):
            raise ConfigError(
                f"balanced L1 needs alpha, gamma and beta > 0, got {self.alpha}, {self.gamma}, {self.beta}"
            )


@dataclass(frozen=True)
class LibraRCNNConfig(BalancedComponents):
    """The baseline's config (``base``) and Libra R-CNN's three switches with their settings.

    - ``iou_balanced_sampling``: the box stage samples with :class:`IoUBalancedSampler`
      (``base.box_batch_size_per_image`` RoIs, ``base.box_positive_fraction`` positives) with
      ``num_bins`` (paper: K = 3; its sampling ablation tries 2, 3, 5) and ``positive_balance``
      (instance-balanced positives); ``floor_thr`` / ``floor_fraction`` as mmdetection's
      (off: -1 / 0, the paper's configuration);
    - ``balanced_pyramid`` after the FPN and ``balanced_l1`` as the box stage's regression loss
      instead of ``base``'s smooth L1, with the settings of :class:`BalancedComponents`.
    """

    base: FasterRCNNConfig = field(default_factory=FasterRCNNConfig)
    iou_balanced_sampling: bool = True
    num_bins: int = 3
    positive_balance: bool = True
    floor_thr: float = -1.0
    floor_fraction: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_bins < 1:
            raise ConfigError(f"num_bins must be >= 1, got {self.num_bins}")


@dataclass(frozen=True)
class LibraRetinaNetConfig(BalancedComponents):
    """RetinaNet's config (``base``) and the two Libra components a single-stage detector takes
    (it has no RoI sampling), :class:`BalancedComponents` with mmdetection's
    ``libra_retinanet_r50_fpn_1x`` settings: the pyramid refined at level 1 (P4 of P3-P7) and
    balanced L1 with ``beta`` 0.11 instead of ``base.box_loss``."""

    base: RetinaNetConfig = field(default_factory=RetinaNetConfig)
    refine_level: int = 1
    beta: float = 0.11


def balanced_pyramid_neck(backbone: FeatureExtractor, *, refine_level: int, refine_type: str) -> BalancedFeaturePyramid:
    """The neck factory the builders take: a balanced pyramid over every level of ``backbone``."""
    num_levels = len(backbone.feature_names)
    if not 0 <= refine_level < num_levels:
        raise ConfigError(
            f"refine_level {refine_level} is not one of the backbone's {num_levels} levels {backbone.feature_names}"
        )
    return BalancedFeaturePyramid(backbone.out_channels, num_levels, refine_level, refine_type)


def _neck(cfg: BalancedComponents):
    if not cfg.balanced_pyramid:
        return None
    return functools.partial(balanced_pyramid_neck, refine_level=cfg.refine_level, refine_type=cfg.refine_type)


def _box_loss(cfg: BalancedComponents):
    if not cfg.balanced_l1:
        return None
    return functools.partial(balanced_l1, alpha=cfg.alpha, gamma=cfg.gamma, beta=cfg.beta)


def roi_sampler(cfg: LibraRCNNConfig) -> IoUBalancedSampler | None:
    """The box stage's sampler of ``cfg`` (``None``: the baseline's random sampler)."""
    if not cfg.iou_balanced_sampling:
        return None
    return IoUBalancedSampler(
        cfg.base.box_batch_size_per_image, cfg.base.box_positive_fraction, cfg.num_bins, cfg.positive_balance,
        cfg.floor_thr, cfg.floor_fraction,
    )


def build_libra_faster_rcnn(cfg: LibraRCNNConfig) -> FasterRCNN:
    """Faster R-CNN of ``cfg.base`` with the switched-on components passed as parts."""
    return build_faster_rcnn(cfg.base, neck=_neck(cfg), roi_sampler=roi_sampler(cfg), box_loss=_box_loss(cfg))


def build_libra_retinanet(cfg: LibraRetinaNetConfig) -> DenseDetector:
    """RetinaNet of ``cfg.base`` with the switched-on components passed as parts."""
    return build_retinanet(cfg.base, neck=_neck(cfg), box_loss=_box_loss(cfg))


def build_rcnn_model(cfg: LibraRCNNConfig, num_classes: int) -> FasterRCNN:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    return build_libra_faster_rcnn(dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, num_classes=num_classes)))


def build_retinanet_model(cfg: LibraRetinaNetConfig, num_classes: int) -> DenseDetector:
    """``num_classes`` counts the foreground classes of the dataset."""
    return build_libra_retinanet(dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, num_classes=num_classes)))


__all__ = [
    "BalancedComponents",
    "IoUBalancedSampler",
    "LibraRCNNConfig",
    "LibraRetinaNetConfig",
    "balanced_pyramid_neck",
    "build_libra_faster_rcnn",
    "build_libra_retinanet",
    "build_rcnn_model",
    "build_retinanet_model",
    "roi_sampler",
]
