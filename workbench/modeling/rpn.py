"""Region proposal network: a head over every feature level, anchors, proposal selection, loss.

Conventions:
- ``N`` images, level ``l`` of size ``H_l x W_l`` with ``A_l`` anchors per location,
  ``A = sum_l A_l H_l W_l`` anchors per image;
- the head returns a dict ``name -> [per level (N, A_l * C, H_l, W_l)]``; the baseline's names are
  ``objectness`` (C = 1) and ``deltas`` (C = 4, box-coder offsets). :func:`flatten_levels` turns
  each into ``(N, A, C)`` in anchor order;
- a *scoring* object turns the flat outputs into a ranking key ``(N, A)`` (top-k per level is taken
  on it) and the ranking key into the proposal score used for the score threshold and NMS. The
  baseline ranks by the objectness logit and scores by its sigmoid; a method may rank and score
  by any monotone quantity (e.g. KL-RPN's ``-0.5 * sum(beta)``, without a sigmoid);
- a *loss* object receives the sampled anchors of the whole batch: ``preds`` name -> (M, C),
  ``labels`` (M,) float 1/0, ``targets`` (M, 4) encoded GT offsets (meaningful where label 1) and
  returns ``loss_rpn_<kind>`` scalars, which the RPN multiplies by its ``loss_weight``;
- proposals are detached ``(P_i, 4)`` xyxy in network-input pixels, sorted by decreasing score.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.losses import binary_cross_entropy_with_logits, reduce_loss, smooth_l1
from workbench.modeling.anchor_generator import AnchorGenerator
from workbench.modeling.assignment import Matcher, Sampler
from workbench.modeling.trace import TraceRecorder, grouped_nms, shown_fields
from workbench.ops import BoxCoder, clip_boxes, size_at_least


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then 1x1 convs for objectness (A) and deltas (4A).

    Weights start from N(0, 0.01), biases from 0.
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        """``[(N, C_in, H_l, W_l)]`` -> ``{"objectness": [(N, A, H_l, W_l)], "deltas": [(N, 4A, H_l, W_l)]}``."""
        objectness, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature), inplace=True)
            objectness.append(self.cls_logits(hidden))
            deltas.append(self.bbox_pred(hidden))
        return {"objectness": objectness, "deltas": deltas}


def flatten_levels(per_level: Sequence[Tensor], anchors_per_location: Sequence[int]) -> Tensor:
    """``[(N, A_l * C, H_l, W_l)]`` -> ``(N, sum_l A_l H_l W_l, C)``, ordered (level, y, x, anchor)."""
    flat = []
    for tensor, num_anchors in zip(per_level, anchors_per_location):
        n, channels, height, width = tensor.shape
        c = channels // num_anchors
        flat.append(tensor.view(n, num_anchors, c, height, width).permute(0, 3, 4, 1, 2).reshape(n, -1, c))
    return torch.cat(flat, dim=1)


@dataclass
class HeadOnAnchors:
    """A head's outputs over the feature levels and the anchors they refer to: ``head_out``
    name -> per level (N, A_l * C, H_l, W_l) as the head returned them, ``flat`` name ->
    (N, A, C) (:func:`flatten_levels`), ``anchors_per_level`` [(A_l H_l W_l, 4)], ``anchors``
    (A, 4) (the levels concatenated) and ``level_counts`` (the anchors of each level)."""

    head_out: dict[str, list[Tensor]]
    flat: dict[str, Tensor]
    anchors_per_level: list[Tensor]
    anchors: Tensor
    level_counts: list[int]


def run_head_on_anchors(
    head: nn.Module,
    anchor_generator: nn.Module,
    features: Mapping[str, Tensor] | Sequence[Tensor],
    padded_size: tuple[int, int],
) -> HeadOnAnchors:
    """What the RPN and the dense detectors start with: ``head`` over every feature level and
    ``anchor_generator``'s anchors for a batch padded to ``padded_size``, flattened to anchor
    order (level, y, x, anchor)."""
    levels = list(features.values()) if isinstance(features, Mapping) else list(features)
    head_out = head(levels)
    first = levels[0]
    anchors_per_level = anchor_generator(
        padded_size, [tuple(f.shape[-2:]) for f in levels], dtype=first.dtype, device=first.device
    )
    per_location = anchor_generator.num_anchors_per_location()
    flat = {name: flatten_levels(outs, per_location) for name, outs in head_out.items()}
    anchors = torch.cat(anchors_per_level, dim=0)
    level_counts = [int(a.shape[0]) for a in anchors_per_level]
    return HeadOnAnchors(head_out, flat, anchors_per_level, anchors, level_counts)


def level_ids(level_counts: Sequence[int], device: torch.device) -> Tensor:
    """The level (int64) of each anchor, for anchors ordered by level with ``level_counts`` per level."""
    return torch.repeat_interleave(
        torch.arange(len(level_counts), device=device), torch.tensor(list(level_counts), device=device)
    )


class ProposalScoring(Protocol):
    """Ranks anchors from the flat head outputs and turns the rank key into a proposal score."""

    def rank(self, outputs: Mapping[str, Tensor]) -> Tensor:
        """Flat outputs (N, A, C) by name -> ranking key (N, A), larger is better."""
        ...

    def score(self, rank: Tensor) -> Tensor:
        """Ranking key (any shape) -> proposal score (same shape), monotone in the key."""
        ...


@dataclass(frozen=True)
class SigmoidObjectness:
    """Baseline scoring: rank by the objectness logit, score by its sigmoid."""

    key: str = "objectness"

    def rank(self, outputs: Mapping[str, Tensor]) -> Tensor:
        return outputs[self.key][..., 0]

    def score(self, rank: Tensor) -> Tensor:
        return torch.sigmoid(rank)


@dataclass(frozen=True)
class RPNLoss:
    """Baseline RPN loss: binary cross-entropy of the objectness logit (mean over the M sampled
    anchors) and ``box_loss`` on the positives' deltas (sum over positives / M)."""

    box_loss: Callable[[Tensor, Tensor], Tensor] = functools.partial(smooth_l1, beta=1.0 / 9.0)

    def __call__(self, preds: Mapping[str, Tensor], labels: Tensor, targets: Tensor) -> dict[str, Tensor]:
        num_sampled = max(int(labels.numel()), 1)
        positive = labels > 0
        cls = binary_cross_entropy_with_logits(preds["objectness"][:, 0], labels)
        box = self.box_loss(preds["deltas"][positive], targets[positive])
        return {
            "loss_rpn_cls": reduce_loss(cls, reduction="mean"),
            "loss_rpn_box": reduce_loss(box, reduction="mean", avg_factor=num_sampled),
        }


@dataclass(frozen=True)
class ProposalSettings:
    """Proposal selection: top-n per level before NMS and per image after, in train and test;
    NMS IoU threshold (per level), minimum box side, minimum score (``None``: no threshold).

    No defaults here: the values are a detector config's (the baseline's ``rpn_*`` fields,
    torchvision's defaults, through :func:`workbench.modeling.faster_rcnn.proposal_settings`)."""

    pre_nms_top_n_train: int
    pre_nms_top_n_test: int
    post_nms_top_n_train: int
    post_nms_top_n_test: int
    nms_thresh: float
    min_size: float
    score_thresh: float | None

    def pre_nms_top_n(self, training: bool) -> int:
        return self.pre_nms_top_n_train if training else self.pre_nms_top_n_test

    def post_nms_top_n(self, training: bool) -> int:
        return self.post_nms_top_n_train if training else self.post_nms_top_n_test


@dataclass
class RPNOutput:
    """Proposals per image (P_i, 4) with scores (P_i,), raw head outputs, losses, and per image
    the per-proposal ``fields`` (name -> (P_i, C_f); empty without ``proposal_fields``)."""

    proposals: list[Tensor]
    scores: list[Tensor]
    raw: dict[str, object] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    fields: list[dict[str, Tensor]] = field(default_factory=list)


def top_n_per_level(rank: Tensor, level_counts: Sequence[int], top_n: int) -> Tensor:
    """Indices (N, K) of the ``top_n`` highest ``rank`` (N, A) entries within each level's slice."""
    picked = []
    offset = 0
    for count, level_rank in zip(level_counts, rank.split(list(level_counts), dim=1)):
        k = min(top_n, count)
        picked.append(level_rank.topk(k, dim=1).indices + offset)
        offset += count
    return torch.cat(picked, dim=1)


def select_proposals(
    boxes: Tensor,
    scores: Tensor,
    levels: Tensor,
    image_size: tuple[int, int],
    settings: ProposalSettings,
    post_nms_top_n: int,
    recorder: TraceRecorder | None = None,
    image_index: int = 0,
    fields: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One image's candidates (K, 4), scores (K,), levels (K,) -> proposals, scores and
    ``fields`` (name -> (K, C) per-candidate values, carried along) after clipping, removal of
    small and low-scoring boxes, per-level NMS and the top-n cut."""
    fields = dict(fields or {})
    boxes = clip_boxes(boxes, image_size)
    keep = size_at_least(boxes, settings.min_size)
    if settings.score_thresh is not None:
        keep = keep & (scores >= settings.score_thresh)
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    fields = {name: value[keep] for name, value in fields.items()}
    if recorder is not None:
        recorder.put(image_index, "rpn_proposals_pre_nms", boxes=boxes, scores=scores, levels=levels,
                     **shown_fields(fields))
    keep = grouped_nms(boxes, scores, levels, settings.nms_thresh, recorder, image_index, "rpn_nms")
    keep = keep[:post_nms_top_n]
    return boxes[keep], scores[keep], {name: value[keep] for name, value in fields.items()}


class RegionProposalNetwork(nn.Module):
    """Proposals from a head over anchors; every part is injected.

    Args:
        head: features list -> dict of per-level outputs (must include ``deltas``).
        anchor_generator: :class:`AnchorGenerator` whose levels match the features.
        box_coder: encodes GT offsets / decodes deltas against anchors.
        matcher: :class:`~workbench.modeling.assignment.Matcher` labelling the anchors (baseline
            ``IoUMatcher(0.7, 0.3)`` with low-quality matches).
        sampler: ``sampler(assignment, generator) -> (pos_mask, neg_mask)``.
        scoring: :class:`ProposalScoring`.
        loss: callable on the sampled anchors (see the module docstring).
        settings: :class:`ProposalSettings`.
        proposal_fields: optional ``flat outputs (N, A, C) by name -> {field: (N, A, C_f)}``;
            each field is carried with the proposals: recorded beside ``boxes`` and ``scores`` in
            the ``rpn_proposals_pre_nms`` and ``rpn_proposals`` trace records and returned per
            image in ``raw["proposal_fields"]`` and ``RPNOutput.fields`` (e.g. KL-RPN's
            per-proposal ``sigma`` (P_i, 4)); the RoI heads carry them to the detections.
        loss_weight: multiplies every loss the ``loss`` returns (a weight of 1 leaves them as
            they are).
    """

    def __init__(
        self,
        head: nn.Module,
        anchor_generator: AnchorGenerator,
        *,
        box_coder: BoxCoder,
        matcher: Matcher,
        sampler: Sampler,
        scoring: ProposalScoring,
        loss: Callable[[Mapping[str, Tensor], Tensor, Tensor], dict[str, Tensor]],
        settings: ProposalSettings,
        proposal_fields: Callable[[Mapping[str, Tensor]], Mapping[str, Tensor]] | None = None,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f"the RPN loss_weight must be >= 0, got {loss_weight}")
        self.head = head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.scoring = scoring
        self.loss = loss
        self.settings = settings
        self.proposal_fields = proposal_fields
        self.loss_weight = loss_weight

    def forward(
        self,
        features: Mapping[str, Tensor] | Sequence[Tensor],
        padded_size: tuple[int, int],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
        recorder: TraceRecorder | None = None,
    ) -> RPNOutput:
        """Features (N, C, H_l, W_l) of a batch padded to ``padded_size`` -> :class:`RPNOutput`.

        ``targets`` (boxes in network-input pixels, optional ``ignore``) add the losses.
        """
        out = run_head_on_anchors(self.head, self.anchor_generator, features, padded_size)
        flat, anchors = out.flat, out.anchors

        proposals, scores, fields = self._propose(flat, anchors, out.level_counts, image_sizes, recorder)
        raw: dict[str, object] = {f"rpn_{name}": outs for name, outs in out.head_out.items()}
        raw["anchors"] = out.anchors_per_level
        raw["proposals"] = proposals
        raw["proposal_scores"] = scores
        if self.proposal_fields is not None:
            raw["proposal_fields"] = fields
        losses = {} if targets is None else self._losses(flat, anchors, targets, generator)
        if self.loss_weight != 1.0:
            losses = {name: self.loss_weight * value for name, value in losses.items()}
        return RPNOutput(proposals, scores, raw, losses, fields)

    def _propose(
        self,
        flat: Mapping[str, Tensor],
        anchors: Tensor,
        level_counts: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
        recorder: TraceRecorder | None,
    ) -> tuple[list[Tensor], list[Tensor], list[dict[str, Tensor]]]:
        with torch.no_grad():
            detached = {k: v.detach() for k, v in flat.items()}
            rank = self.scoring.rank(detached)
            extra = {} if self.proposal_fields is None else dict(self.proposal_fields(detached))
            top = top_n_per_level(rank, level_counts, self.settings.pre_nms_top_n(self.training))
            top_rank = torch.gather(rank, 1, top)
            top_scores = self.scoring.score(top_rank)
            levels = level_ids(level_counts, anchors.device)
            deltas = flat["deltas"].detach()
            post_n = self.settings.post_nms_top_n(self.training)
            proposals, scores, fields = [], [], []
            for i, image_size in enumerate(image_sizes):
                idx = top[i]
                boxes = self.box_coder.decode(deltas[i, idx], anchors[idx])
                if recorder is not None:
                    recorder.put(i, "anchors", boxes=anchors, levels=levels)
                kept_boxes, kept_scores, kept_fields = select_proposals(
                    boxes, top_scores[i], levels[idx], image_size, self.settings, post_n, recorder, i,
                    fields={name: value[i, idx] for name, value in extra.items()},
                )
                if recorder is not None:
                    recorder.put(i, "rpn_proposals", boxes=kept_boxes, scores=kept_scores, **shown_fields(kept_fields))
                proposals.append(kept_boxes)
                scores.append(kept_scores)
                fields.append(kept_fields)
        return proposals, scores, fields

    def _losses(
        self,
        flat: Mapping[str, Tensor],
        anchors: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        num_anchors = anchors.shape[0]
        picked, labels, regression = [], [], []
        for i, target in enumerate(targets):
            gt_boxes = target["boxes"]
            assignment = self.matcher(anchors, gt_boxes, gt_ignore=target.get("ignore"))
            pos, neg = self.sampler(assignment, generator)
            idx = torch.where(pos | neg)[0]
            picked.append(idx + i * num_anchors)
            labels.append((assignment.labels[idx] > 0).to(anchors.dtype))
            if gt_boxes.shape[0] == 0:
                regression.append(torch.zeros((idx.shape[0], 4), dtype=anchors.dtype, device=anchors.device))
            else:
                matched = gt_boxes.to(anchors.dtype)[assignment.matched_gt[idx]]
                regression.append(self.box_coder.encode(matched, anchors[idx]))
        rows = torch.cat(picked)  # one gather per output keeps the backward to one scatter
        sampled = {name: tensor.reshape(-1, tensor.shape[-1])[rows] for name, tensor in flat.items()}
        return self.loss(sampled, torch.cat(labels), torch.cat(regression))

