"""Loss rescaling by uncertainty inference on the YOLOv3-style detector: config, head, loss and
detector (``papers/uncertainty-loss-rescaling.md``, slides "Network Architecture", "Bayesian
Convolution Layer", "BALD" and "Difficulty Scoring").

- **Branch** (slide "Network Architecture"): beside each level's 1x1 objectness convolution, an
  auxiliary 1x1 :class:`~workbench.modeling.conv_bayes.ConvBayes` on the same features with one
  output per anchor. Its per-anchor moments ``(mu, sigma)`` are head outputs ``aux_mu`` and
  ``aux_sigma``; its eq. (1) output (``mu`` in evaluation) is ``aux_logits``, trained with the
  objectness loss against the same targets as the main objectness (``loss_yolo_aux``; gradients
  reach the shared features, as an auxiliary branch's do). ``branch="conv"`` puts a plain 1x1
  convolution there instead (the "additional conv" ablation), ``None`` none.
- **Correctness** of an anchor: the main objectness at ``correct_thresh`` (0.5) agrees with its
  assignment: a positive scored above it (TP) or a negative scored at or below it (TN).
  Ignored anchors take no objectness loss, so their correctness never matters.
- **Rescaling**: ``U_BALD = bald(mu, sigma)`` (eq. 2) per anchor, ``D = difficulty(U_BALD,
  correct)`` (eq. 3), both without gradient; each anchor's objectness loss is multiplied by
  ``D``. With ``rescale_positive_terms`` the positives' class and box losses are multiplied by
  their ``D`` too (off by default: the slides rescale "each anchor's loss" by a difficulty that
  is defined by the objectness prediction only). The branch's own loss is not rescaled.

Rows of the paper's table (switches; presets in :mod:`workbench.methods.uncertainty`):
baseline (``branch=None, rescale=False``), baseline + convBayes (``branch="bayes"``, no
rescaling), baseline + conv (``branch="conv"``), objectness focal loss and objectness anchor loss
(``base.objectness_loss``), the method (``branch="bayes", rescale=True``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from workbench import records as R
from workbench.errors import ConfigError
from workbench.losses.bald import bald, difficulty
from workbench.methods.yolov3.losses import STAGE, YOLOLoss, YOLOTargets
from workbench.methods.yolov3.coding import shapes_per_level
from workbench.methods.yolov3.model import YOLOv3Config, YOLOv3Detector, build_loss, build_yolov3
from workbench.methods.yolov3.networks import YOLOv3Head
from workbench.modeling.conv_bayes import ConvBayes
from workbench.modeling.rpn import flatten_levels
from workbench.modeling.trace import TraceRecorder
from workbench.structures import Detections, DetectorOutput

BRANCHES = ("bayes", "conv")


@dataclass(frozen=True)
class UncertaintyRescalingConfig:
    """The base detector's config and the method's switches (module docstring).

    ``lam``, ``learn_lam``: see :class:`~workbench.modeling.conv_bayes.ConvBayes` (fixed at 1,
    Gaussian dropout's ``alpha`` at rate 0.5, by default); ``num_samples``: ``K`` of eq. (1)
    (the slides give none; 10 draws cost nothing beside the network)."""

    base: YOLOv3Config = field(default_factory=YOLOv3Config)
    branch: str | None = "bayes"
    rescale: bool = True
    rescale_positive_terms: bool = False
    lam: float = 1.0
    learn_lam: bool = False
    num_samples: int = 10
    branch_loss_weight: float = 1.0
    correct_thresh: float = 0.5

    def __post_init__(self) -> None:
        if self.branch is not None and self.branch not in BRANCHES:
            raise ConfigError(f"unknown branch {self.branch!r}; use bayes, conv or None")
        if self.rescale and self.branch != "bayes":
            raise ConfigError("rescaling by uncertainty needs the convBayes branch (branch='bayes')")


class UncertaintyHead(YOLOv3Head):
    """:class:`YOLOv3Head` plus the auxiliary branch (module docstring); its weights start as
    the objectness convolution's (N(0, 0.01), bias from the same prior)."""

    def __init__(self, in_channels: Sequence[int], num_anchors: int, num_classes: int, obj_prior: float,
                 branch: str, lam: float, num_samples: int, learn_lam: bool = False) -> None:
        super().__init__(in_channels, num_anchors, num_classes, obj_prior)
        self.branch = branch
        if branch == "bayes":
            layers = [ConvBayes(c, num_anchors, 1, lam=lam, num_samples=num_samples, learn_lam=learn_lam)
                      for c in in_channels]
        else:
            layers = [nn.Conv2d(c, num_anchors, 1) for c in in_channels]
        self.aux = nn.ModuleList(layers)
        for layer in self.aux:
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, -math.log((1 - obj_prior) / obj_prior))

    def forward(self, features: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        out = super().forward(features)
        if self.branch != "bayes":
            out["aux_logits"] = [layer(f) for layer, f in zip(self.aux, features)]
            return out
        moments = [layer.moments(f) for layer, f in zip(self.aux, features)]
        out["aux_mu"] = [mu for mu, _ in moments]
        out["aux_sigma"] = [sigma for _, sigma in moments]
        out["aux_logits"] = [layer.sample(mu, sigma) if self.training else mu
                             for layer, (mu, sigma) in zip(self.aux, moments)]
        return out


def anchor_correct(obj_logits: Tensor, positive: Tensor, thresh: float = 0.5) -> Tensor:
    """``(N, A)`` bool: the main objectness (logits (N, A)) at ``thresh`` agrees with the
    assignment (TP for positives, TN for the rest)."""
    return (torch.sigmoid(obj_logits) > thresh) == positive


def anchor_difficulty(preds: Mapping[str, Tensor], positive: Tensor, thresh: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """``(U_BALD, correct, D)``, each (N, A), from flat head outputs (N, A, 1) and the positives."""
    with torch.no_grad():
        u_bald = bald(preds["aux_mu"][..., 0].float(), preds["aux_sigma"][..., 0].float())  # float32 under AMP
        correct = anchor_correct(preds["obj_logits"][..., 0].float(), positive, thresh)
        return u_bald, correct, difficulty(u_bald, correct)


@dataclass(frozen=True)
class UncertaintyLoss:
    """YOLOv3's loss with the branch's objectness loss and the difficulty rescaling."""

    base: YOLOLoss
    rescale: bool = True
    rescale_positive_terms: bool = False
    branch_weight: float = 1.0
    correct_thresh: float = 0.5

    @property
    def objectness_loss(self):
        return self.base.objectness_loss

    def __call__(self, preds: Mapping[str, Tensor], targets: YOLOTargets) -> dict[str, Tensor]:
        per_anchor = self.base.per_anchor(preds, targets)
        weights = None
        if self.rescale:
            _, _, d = anchor_difficulty(preds, targets.positive, self.correct_thresh)
            weights = {"obj": d, **({"cls": d, "box": d} if self.rescale_positive_terms else {})}
        losses = self.base.reduce(per_anchor, weights)
        if "aux_logits" in preds:
            logits = preds["aux_logits"][..., 0]
            aux = self.base.objectness_loss(logits, targets.positive.to(logits.dtype))
            aux = torch.where(targets.positive | targets.negative, aux, torch.zeros_like(aux))
            losses[f"loss_{STAGE}_aux"] = aux.sum(dim=1).mean() * self.branch_weight
        return losses


# ------------------------------------------------------------------------------ the detector

#: The finest stride: the uncertainty maps' cell (network-input pixels).
MAP_CELL = 8
#: The traced maps and per-anchor values (BALD, mu, sigma, D) are stored in float16: they are
#: shown and summarised, never replayed, and float16 keeps three significant digits (a BALD in
#: bits to about 5e-4); at 608 x 608 px this halves the record (22,743 anchors, three values each).
MAP_DTYPE = torch.float16


def per_scale_fields(name: str, per_level: Sequence[Tensor], strides: Sequence[int]) -> dict[str, Tensor]:
    """``[(A_l, H_l, W_l)]`` of one image -> ``{f"{name}_stride{s}": (H_l, W_l, A_l)}`` (the
    anchors' order within a level)."""
    return {f"{name}_stride{s}": v.permute(1, 2, 0).contiguous() for v, s in zip(per_level, strides)}


def cell_maps(per_level: Sequence[Tensor], strides: Sequence[int], image_size: tuple[int, int]) -> dict[str, Tensor]:
    """One image's per-anchor values ``[(A_l, H_l, W_l)]`` -> maps on the ``MAP_CELL`` grid
    cropped to the image (``ceil(h / 8) x ceil(w / 8)``): per scale the maximum over the
    anchors of each cell (``stride{s}``), each coarse cell covering ``s / 8`` fine cells a
    side, and the maximum over the scales (``all``)."""
    rows, cols = math.ceil(image_size[0] / MAP_CELL), math.ceil(image_size[1] / MAP_CELL)
    maps = {}
    for values, stride in zip(per_level, strides):
        factor = stride // MAP_CELL
        best = values.max(dim=0).values
        fine = best.repeat_interleave(factor, dim=0).repeat_interleave(factor, dim=1)
        maps[f"stride{stride}"] = fine[:rows, :cols].contiguous()
    maps["all"] = torch.stack(list(maps.values())).max(dim=0).values
    return maps


class UncertaintyDetector(YOLOv3Detector):
    """:class:`YOLOv3Detector` with the convBayes branch, which in evaluation also returns and
    traces its uncertainty (see :mod:`workbench.methods.uncertainty.maps` for the records):
    every detection carries ``extras["uncertainty"]``, the BALD of the anchor it came from;
    with a recorder, the maps and per-anchor values go to :data:`workbench.records.UNCERTAINTY_MAP`
    and the detections' uncertainty to :data:`~workbench.records.DETECTIONS`. Given targets and
    a recorder in evaluation, the difficulty ``D`` of every anchor is traced as well."""

    def evaluation_extras(self, out: DetectorOutput, images: Sequence[Tensor],
                          targets: Sequence[Mapping[str, Tensor]] | None,
                          recorder: TraceRecorder | None) -> DetectorOutput:
        with torch.no_grad():
            per_location = self.anchor_generator.num_anchors_per_location()
            u_levels = [bald(mu.float(), sigma.float()) for mu, sigma in zip(out.raw["aux_mu"], out.raw["aux_sigma"])]
            u_flat = flatten_levels(u_levels, per_location)[..., 0]  # (N, A)
            out.raw["uncertainty"] = u_levels
            detections = []
            for i, det in enumerate(out.detections):
                extras = dict(det.extras)
                extras["uncertainty"] = u_flat[i, extras.pop("anchor_index")]
                detections.append(Detections(det.boxes, det.scores, det.labels, extras))
            out.detections = detections
            if recorder is not None:
                extra_levels = None if targets is None else self.difficulty_levels(out.raw, images, targets)
                self._record(out, u_levels, extra_levels, recorder)
        return out

    def _record(self, out: DetectorOutput, u_levels: list[Tensor], extra_levels: dict[str, list[Tensor]] | None,
                recorder: TraceRecorder) -> None:
        raw = out.raw
        strides = self.strides
        for i, (size, original) in enumerate(zip(raw["image_sizes"], raw["original_sizes"])):
            fields: dict[str, Tensor] = {}
            maps = cell_maps([u[i] for u in u_levels], strides, size)
            fields["bald"] = maps.pop("all")
            fields.update({f"bald_{k}": v for k, v in maps.items()})
            fields.update(per_scale_fields("mu", [m[i] for m in raw["aux_mu"]], strides))
            fields.update(per_scale_fields("sigma", [s[i] for s in raw["aux_sigma"]], strides))
            if extra_levels is not None:
                for name, levels in extra_levels.items():
                    fields.update(per_scale_fields(name, [v[i] for v in levels], strides))
                fields["difficulty"] = cell_maps([d[i] for d in extra_levels["difficulty"]], strides, size)["all"]
            fields = {k: v.to(MAP_DTYPE) if v.is_floating_point() else v for k, v in fields.items()}
            fields[R.MAP_CELL_SIZE] = torch.tensor(
                [MAP_CELL * original[0] / size[0], MAP_CELL * original[1] / size[1]], dtype=torch.float32)
            recorder.put(i, R.UNCERTAINTY_MAP, **fields)
            recorder.images[i][R.DETECTIONS]["uncertainty"] = out.detections[i].extras["uncertainty"].detach()

    def difficulty_levels(self, raw: Mapping[str, object], images: Sequence[Tensor],
                          targets: Sequence[Mapping[str, Tensor]]) -> dict[str, list[Tensor]]:
        """What training would compute for each anchor of these images and their ``targets``
        (original pixels), per level ``(N, A_l, H_l, W_l)``: ``difficulty`` (D of eq. 3),
        ``correct`` (TP or TN), ``label`` (the assignment: class, 0, or -1 ignored) and
        ``predicted`` (the main objectness above the threshold). In evaluation the branch gives
        ``mu``, so the predictions are the deterministic ones."""
        _, net_targets = self.transform(images, targets)
        per_location = self.anchor_generator.num_anchors_per_location()
        names = ("obj_logits", "deltas", "aux_mu", "aux_sigma")
        flat = {name: flatten_levels(raw[name], per_location) for name in names}
        anchors = torch.cat(raw["anchors"])
        yolo_targets = self.targets(flat, anchors, net_targets)
        thresh = getattr(self.loss, "correct_thresh", 0.5)
        _, correct, d = anchor_difficulty(flat, yolo_targets.positive, thresh)
        predicted = torch.sigmoid(flat["obj_logits"][..., 0]) > thresh
        shapes = [(a, *o.shape[-2:]) for a, o in zip(per_location, raw["obj_logits"])]
        values = {"difficulty": d, "correct": correct, "label": yolo_targets.labels, "predicted": predicted}
        return {name: unflatten(value, shapes) for name, value in values.items()}


def unflatten(flat: Tensor, shapes: Sequence[tuple[int, int, int]]) -> list[Tensor]:
    """``(N, A)`` in (level, y, x, anchor) order -> per level ``(N, A_l, H_l, W_l)``."""
    out, offset = [], 0
    for a, h, w in shapes:
        count = a * h * w
        out.append(flat[:, offset:offset + count].reshape(flat.shape[0], h, w, a).permute(0, 3, 1, 2))
        offset += count
    return out


def build_model(cfg: UncertaintyRescalingConfig, num_classes: int) -> YOLOv3Detector:
    """The detector of one row (``num_classes`` counts the foreground classes)."""
    base = dataclasses.replace(cfg.base, num_classes=num_classes)
    loss = UncertaintyLoss(build_loss(base), cfg.rescale, cfg.rescale_positive_terms, cfg.branch_loss_weight,
                           cfg.correct_thresh)
    if cfg.branch is None:
        return build_yolov3(base, loss=loss)
    num_anchors = len(shapes_per_level(base.anchors)[0])
    channels = tuple(2 * c for c in base.neck_channels)  # the neck's outputs (YOLOv3Neck)
    head = UncertaintyHead(channels, num_anchors, num_classes, base.obj_prior, cfg.branch,
                           cfg.lam, cfg.num_samples, cfg.learn_lam)
    detector_type = UncertaintyDetector if cfg.branch == "bayes" else YOLOv3Detector
    return build_yolov3(base, head=head, loss=loss, detector_type=detector_type, with_anchor_index=cfg.branch == "bayes")
