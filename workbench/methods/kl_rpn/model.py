"""KL-RPN (Seo et al., "KL-divergence-based region proposal network for object detection"):
what differs from the baseline Faster R-CNN.

Only the RPN head, its proposal scoring and its loss change, plus the weight of the second
stage's losses; backbone, anchors, matcher (0.7 / 0.3 with the best anchor of each GT
positive), sampler, proposal selection and RoI heads are the baseline's:
:func:`build_kl_rpn_faster_rcnn` passes KL-RPN's parts to
:func:`workbench.modeling.build_faster_rcnn` with ``KLRPNConfig.base``. Each proposal carries its
``sigma`` as a per-proposal field, which the RoI heads gather into the detections.

Conventions (shapes as in :mod:`workbench.modeling.rpn`): the head returns per level
``deltas`` (N, 4A, H_l, W_l), the Gaussian means ``mu`` of the 4 box-coder offsets, and
``log_var`` (N, 4A, H_l, W_l), the paper's ``beta = log(sigma**2)`` of each offset, clamped to
``[log_var_min, log_var_max]``. There is no objectness logit: the objectness of an anchor is
``1 / (sigma_x sigma_y sigma_w sigma_h + 1e-12)`` (paper equation (10)); proposals are ranked,
thresholded and suppressed by its logarithm ``-0.5 * sum(beta)`` (``log_objectness``), which
orders them identically (for ``prod sigma >> 1e-12``, which the clamp guarantees) and never
passes through a sigmoid.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.errors import ConfigError
from workbench.losses import kl_rpn_loss, reduce_loss
from workbench.losses.kl import NEGATIVE_TARGET_VARIANCE
from workbench import records as R
from workbench.methods.kl_rpn.uncertainty import uncertainty_maps
from workbench.modeling import FasterRCNN, FasterRCNNConfig, TraceRecorder, build_faster_rcnn
from workbench.structures import DetectorOutput

#: Head output names.
DELTAS = "deltas"
LOG_VAR = "log_var"


@dataclass(frozen=True)
class KLRPNConfig:
    """The baseline's config (``base``) plus what KL-RPN adds. Every number of the paper is here.

    - ``gamma``: weight of the squared offset terms of equations (4) and (7) (paper: 1/2);
    - ``negative_variance``: variance of the negatives' target N(0, 1/3) (paper section 2.2);
    - ``log_var_min`` / ``log_var_max``: ``beta = log(sigma**2)`` is clamped to this range in
      the head (not in the paper). The lower bound keeps ``exp(-beta)`` (the weight of the squared
      error, up to ``exp(-log_var_min)``) and the ranking key bounded; a positive fitted to its GT
      otherwise drives ``beta`` to minus infinity. ``[-8, 8]`` allows ``sigma`` from 0.018 to 55
      in offset units, far wider than the spread of the targets;
    - ``log_var_init_std``: the ``log_var`` convolution's weights start from N(0, std) with zero
      bias (paper section 3.1: "N(0, 0.00001)"; the KL-Loss ports use std 1e-5);
    - ``rcnn_loss_weight``: lambda of ``L = L_KL + lambda * (L_cls + L_reg)`` (paper equation
      (9), where it is called beta; 10): the box stage's loss weight. ``base.rcnn_loss_weight``
      must stay 1 (one place for the weight);
    - ``uncertainty_maps``: in evaluation mode, add ``raw["uncertainty_maps"]`` (see
      :mod:`workbench.methods.kl_rpn.uncertainty`).

    ``base.rpn_score_thresh`` thresholds the *log* objectness here (``None``: no threshold, the
    default; the baseline's 0.0 would mean ``prod sigma <= 1``).
    """

    base: FasterRCNNConfig = field(default_factory=lambda: FasterRCNNConfig(rpn_score_thresh=None))
    gamma: float = 0.5
    negative_variance: float = NEGATIVE_TARGET_VARIANCE
    log_var_min: float = -8.0
    log_var_max: float = 8.0
    log_var_init_std: float = 1e-5
    rcnn_loss_weight: float = 10.0
    uncertainty_maps: bool = True

    def __post_init__(self) -> None:
        if not self.log_var_min < self.log_var_max:
            raise ConfigError(f"log_var_min must be below log_var_max, got {self.log_var_min}, {self.log_var_max}")
        if not (self.gamma > 0 and self.negative_variance > 0 and self.rcnn_loss_weight >= 0):
            raise ConfigError("gamma and negative_variance must be positive and rcnn_loss_weight >= 0")
        if self.base.rcnn_loss_weight != 1.0:
            raise ConfigError(
                "KL-RPN weights the second stage by its own rcnn_loss_weight (lambda); "
                f"leave base.rcnn_loss_weight at 1.0, got {self.base.rcnn_loss_weight}"
            )


class KLRPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then 1x1 convs for ``deltas`` (4A) and ``log_var`` (4A).

    ``conv`` and ``bbox_pred`` start like the baseline's :class:`~workbench.modeling.RPNHead`
    (weights N(0, 0.01), zero bias); ``log_var`` (the parameters KL-RPN adds) from
    N(0, ``log_var_init_std``) with zero bias, so every anchor starts at ``sigma = 1``.
    ``log_var`` is clamped to ``[log_var_min, log_var_max]`` (see :class:`KLRPNConfig`).
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        *,
        log_var_min: float = -8.0,
        log_var_max: float = 8.0,
        log_var_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        self.log_var = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for layer in (self.conv, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.log_var.weight, std=log_var_init_std)
        nn.init.zeros_(self.log_var.bias)
        self.log_var_min = log_var_min
        self.log_var_max = log_var_max

    def forward(self, features: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        """``[(N, C_in, H_l, W_l)]`` -> ``{"deltas": [(N, 4A, H_l, W_l)], "log_var": [(N, 4A, H_l, W_l)]}``."""
        deltas, log_var = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature), inplace=True)
            deltas.append(self.bbox_pred(hidden))
            log_var.append(self.log_var(hidden).clamp(self.log_var_min, self.log_var_max))
        return {DELTAS: deltas, LOG_VAR: log_var}


def log_objectness(log_var: Tensor) -> Tensor:
    """``-0.5 * sum(beta)`` over the last dimension: ``(..., 4) -> (...)``; equals
    ``-log(sigma_x sigma_y sigma_w sigma_h)``, the log of the paper's objectness without its
    ``1e-12``."""
    return -0.5 * log_var.sum(dim=-1)


def paper_objectness(log_var: Tensor, eps: float = 1e-12) -> Tensor:
    """The paper's equation (10) as written: ``1 / (prod sigma + eps)``, ``(..., 4) -> (...)``.
    For reference and tests; ranking uses :func:`log_objectness`, which cannot overflow."""
    return 1.0 / (torch.exp(0.5 * log_var).prod(dim=-1) + eps)


@dataclass(frozen=True)
class KLObjectness:
    """KL-RPN scoring (:class:`~workbench.modeling.ProposalScoring`): rank by
    :func:`log_objectness`, and use the same value as the proposal score (identity, no sigmoid),
    so score thresholds and NMS see ``log(1 / prod sigma)``."""

    key: str = LOG_VAR

    def rank(self, outputs: Mapping[str, Tensor]) -> Tensor:
        return log_objectness(outputs[self.key])

    def score(self, rank: Tensor) -> Tensor:
        return rank


def proposal_sigma(outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-anchor ``sigma`` (N, A, 4) from the flat head outputs: what each proposal carries into
    the trace (``rpn_proposals``), ``raw["proposal_fields"]`` and, through the RoI heads, each
    detection's ``extras["sigma"]``."""
    return {"sigma": torch.exp(0.5 * outputs[LOG_VAR])}


@dataclass(frozen=True)
class KLRPNLoss:
    """``loss_rpn_kl``: :func:`workbench.losses.kl_rpn_loss` on the sampled anchors, summed over
    the 4 coordinates and averaged over the M sampled anchors (as the baseline's objectness loss)."""

    gamma: float = 0.5
    negative_variance: float = NEGATIVE_TARGET_VARIANCE

    def __call__(self, preds: Mapping[str, Tensor], labels: Tensor, targets: Tensor) -> dict[str, Tensor]:
        per_anchor = kl_rpn_loss(
            preds[DELTAS], preds[LOG_VAR], targets, labels.to(torch.int64), self.gamma, self.negative_variance
        )
        return {"loss_rpn_kl": reduce_loss(per_anchor, reduction="mean", avg_factor=max(int(labels.numel()), 1))}


class KLRPNFasterRCNN(FasterRCNN):
    """The baseline detector that, in evaluation mode, adds the per-image uncertainty maps in
    ``raw["uncertainty_maps"]`` (recorded as ``uncertainty_map`` with a recorder). Each
    detection's ``extras["sigma"]`` (N, 4), the sigma of the proposal it was refined from (offset
    units), comes from the RPN's per-proposal field through the RoI heads."""

    def __init__(self, *args: Any, uncertainty_maps: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.uncertainty_maps = uncertainty_maps

    def evaluation_extras(self, out: DetectorOutput, images: Sequence[Tensor],
                          targets: Sequence[Mapping[str, Tensor]] | None,
                          recorder: TraceRecorder | None) -> DetectorOutput:
        if self.uncertainty_maps:
            maps = uncertainty_maps(
                out.raw[f"rpn_{LOG_VAR}"],
                self.rpn.anchor_generator.num_anchors_per_location(),
                out.raw["padded_size"],
                out.raw["image_sizes"],
                out.raw["original_sizes"],
            )
            out.raw["uncertainty_maps"] = maps
            if recorder is not None:
                for i, fields in enumerate(maps):
                    recorder.put(i, R.UNCERTAINTY_MAP, **fields)
        return out


def build_kl_rpn_faster_rcnn(cfg: KLRPNConfig) -> KLRPNFasterRCNN:
    """Faster R-CNN of ``cfg.base`` with KL-RPN's RPN head (:class:`KLRPNHead`), scoring
    (:class:`KLObjectness`), loss (:class:`KLRPNLoss`) and per-proposal ``sigma``
    (:func:`proposal_sigma`), and the second stage's losses weighted by
    ``cfg.rcnn_loss_weight``."""
    return build_faster_rcnn(
        cfg.base,
        rpn_head=functools.partial(
            KLRPNHead,
            log_var_min=cfg.log_var_min,
            log_var_max=cfg.log_var_max,
            log_var_init_std=cfg.log_var_init_std,
        ),
        rpn_scoring=KLObjectness(),
        rpn_loss=KLRPNLoss(cfg.gamma, cfg.negative_variance),
        rpn_proposal_fields=proposal_sigma,
        rcnn_loss_weight=cfg.rcnn_loss_weight,
        detector=functools.partial(KLRPNFasterRCNN, uncertainty_maps=cfg.uncertainty_maps),
    )  # type: ignore[return-value]


def build_model(cfg: KLRPNConfig, num_classes: int) -> KLRPNFasterRCNN:
    """``num_classes`` counts the foreground classes of the dataset (the model adds background)."""
    base = dataclasses.replace(cfg.base, num_classes=num_classes)
    return build_kl_rpn_faster_rcnn(dataclasses.replace(cfg, base=base))



__all__ = [
    "KLObjectness",
    "KLRPNConfig",
    "KLRPNFasterRCNN",
    "KLRPNHead",
    "KLRPNLoss",
    "build_kl_rpn_faster_rcnn",
    "build_model",
    "log_objectness",
    "paper_objectness",
    "proposal_sigma",
]
