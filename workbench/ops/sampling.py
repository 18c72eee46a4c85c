"""Choosing which candidates of one image enter the loss.

Conventions:
- ``labels`` (N,) int64: ``>= 1`` positive, ``0`` negative, ``-1`` ignored (torchvision's
  convention for sampler inputs);
- every function is stateless and never changes its inputs; its only randomness is the
  ``generator`` argument (``None`` draws from torch's default generator of the generator's
  device, which is what torchvision's samplers do). Random numbers are drawn on the
  generator's device and results are returned on the input's device;
- masks are ``(N,)`` bool; index results are sorted int64 positions into the input;
- hard negative mining is deterministic (no generator): it ranks negatives by a per-candidate
  loss given by the caller, ``(N,)`` for one image or ``(B, N)`` for a batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "sample_hard_negatives",
    "sample_hard_negatives_batched",
    "sample_random",
    "sample_instance_balanced_positive",
    "sample_iou_balanced_negative",
    "sample_libra",
]


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A random permutation of ``range(n)`` on ``device``, drawn from ``generator``."""
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _random_subset(indices: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """``k`` entries of ``indices`` (M,) chosen uniformly without replacement (all if M <= k)."""
    if indices.numel() <= k:
        return indices
    return indices[_randperm(indices.numel(), generator, indices.device)[:k]]


def _random_rank_in_group(groups: Tensor, generator: torch.Generator | None) -> Tensor:
    """For group ids (M,) int64, a uniformly random order inside each group: ``(M,)`` ranks
    ``0 .. size_of_group - 1``."""
    num = groups.numel()
    perm = _randperm(num, generator, groups.device)
    grouped = perm[torch.sort(groups[perm], stable=True).indices]  # by group, random within group
    _, counts = torch.unique_consecutive(groups[grouped], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(num, device=groups.device) - torch.repeat_interleave(starts, counts)
    rank = torch.empty_like(position)
    rank[grouped] = position
    return rank


def sample_random(
    labels: Tensor,
    num_samples: int,
    positive_fraction: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Uniform sampling of positives and negatives: ``labels`` (N,) -> ``(pos_mask, neg_mask)``.

    ``num_pos = min(int(num_samples * positive_fraction), #positives)``,
    ``num_neg = min(num_samples - num_pos, #negatives)``. The draws (a permutation of the
    positives, then one of the negatives) are those of torchvision's
    ``BalancedPositiveNegativeSampler``, so with the same generator state the choice is the same.
    """
    positive = torch.where(labels >= 1)[0]
    negative = torch.where(labels == 0)[0]
    num_pos = min(int(num_samples * positive_fraction), positive.numel())
    num_neg = min(num_samples - num_pos, negative.numel())
    chosen_pos = positive[_randperm(positive.numel(), generator, labels.device)[:num_pos]]
    chosen_neg = negative[_randperm(negative.numel(), generator, labels.device)[:num_neg]]
    return _as_masks(labels, chosen_pos, chosen_neg)


def _as_masks(labels: Tensor, chosen_pos: Tensor, chosen_neg: Tensor) -> tuple[Tensor, Tensor]:
    """Chosen positions -> ``(pos_mask, neg_mask)`` of ``labels``' shape."""
    pos_mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    neg_mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    pos_mask[chosen_pos] = True
    neg_mask[chosen_neg] = True
    return pos_mask, neg_mask


def _all_or_none(total: int, num: int, device: torch.device) -> Tensor:
    """The choice of ``num`` of ``total`` that needs no draw: all of them when ``total <= num``,
    else (``num <= 0``) none."""
    if total <= num:
        return torch.arange(total, device=device)
    return torch.zeros((0,), dtype=torch.int64, device=device)


def sample_instance_balanced_positive(
    pos_gt_index: Tensor,
    num: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Instance-balanced positive sampling (Libra R-CNN): ``pos_gt_index`` (P,) -> chosen positions.

    ``pos_gt_index[i]`` is the GT matched by positive ``i``. Returns ``min(num, P)`` sorted
    positions into ``pos_gt_index``: each of the G ground truths first gives up to
    ``ceil(num / G)`` of its positives (the largest GTs no longer dominate), taken round by round
    so no GT gets more than one extra before another gets its share; any remaining places are
    filled uniformly from the positives left.
    """
    total = pos_gt_index.numel()
    device = pos_gt_index.device
    if total <= num or num <= 0:
        return _all_or_none(total, num, device)
    num_gt = int(torch.unique(pos_gt_index).numel())
    quota = -(-num // num_gt)
    rank = _random_rank_in_group(pos_gt_index.to(torch.int64), generator)
    # Primary key: the round a positive is drawn in (its random rank within its GT), with every
    # positive past its GT's quota in one final round; secondary key: a random tie-break.
    round_ = rank.clamp(max=quota)
    key = round_ * total + _randperm(total, generator, device)
    chosen = torch.argsort(key)[:num]
    return torch.sort(chosen).values


def sample_iou_balanced_negative(
    neg_max_iou: Tensor,
    num: int,
    generator: torch.Generator | None = None,
    num_bins: int = 3,
    floor_thr: float = -1.0,
    floor_fraction: float = 0.0,
) -> Tensor:
    """IoU-balanced negative sampling (Libra R-CNN): ``neg_max_iou`` (Q,) -> chosen positions.

    ``neg_max_iou`` holds each *negative's* best IoU with any GT. Returns ``min(num, Q)``
    sorted positions: the negatives' own IoU range ``[min, max]`` is split into ``num_bins``
    equal bins (the top bin includes ``max``) and up to ``num // num_bins`` are drawn uniformly
    from each; places a short bin leaves are filled uniformly from the negatives left.

    Floor (mmdetection's ``floor_thr`` / ``floor_fraction``, off by default): with
    ``floor_thr > 0`` negatives with IoU ``< floor_thr``, with ``floor_thr == 0`` those with IoU
    ``== 0``, are set apart; bins cover the others and get ``int(num * (1 - floor_fraction))``
    places, the floor set fills up to ``num`` at random. Unlike mmdetection, the bins never
    include positives' IoU, and nothing is stored between calls.
    """
    total = neg_max_iou.numel()
    device = neg_max_iou.device
    if total <= num or num <= 0:
        return _all_or_none(total, num, device)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")

    if floor_thr > 0:
        in_floor = neg_max_iou < floor_thr
    elif floor_thr == 0:
        in_floor = neg_max_iou == 0
    else:
        in_floor = torch.zeros_like(neg_max_iou, dtype=torch.bool)
    sampling_set = torch.where(~in_floor)[0]
    num_balanced = int(num * (1.0 - floor_fraction)) if floor_thr >= 0 else num

    if sampling_set.numel() <= num_balanced:
        chosen = sampling_set
    elif num_bins == 1:
        chosen = _random_subset(sampling_set, num_balanced, generator)
    else:
        chosen = _balanced_over_bins(neg_max_iou[sampling_set], num_balanced, num_bins, generator)
        chosen = sampling_set[chosen]

    taken = torch.zeros(total, dtype=torch.bool, device=device)
    taken[chosen] = True
    floor_pick = _random_subset(torch.where(in_floor)[0], num - chosen.numel(), generator)
    taken[floor_pick] = True
    missing = num - int(taken.sum())
    if missing > 0:
        taken[_random_subset(torch.where(~taken)[0], missing, generator)] = True
    return torch.where(taken)[0]


def _balanced_over_bins(iou: Tensor, num: int, num_bins: int, generator: torch.Generator | None) -> Tensor:
    """``num`` of the M values ``iou`` (M > num), balanced over ``num_bins`` equal bins of their
    own range: sorted positions ``(num,)``."""
    low = iou.min()
    width = (iou.max() - low) / num_bins
    if float(width) > 0:
        bins = torch.floor((iou - low) / width).to(torch.int64).clamp_(0, num_bins - 1)
    else:  # all equal: a single bin
        bins = torch.zeros(iou.shape, dtype=torch.int64, device=iou.device)
    rank = _random_rank_in_group(bins, generator)
    in_quota = rank < num // num_bins
    chosen = torch.where(in_quota)[0]
    fill = _random_subset(torch.where(~in_quota)[0], num - chosen.numel(), generator)
    return torch.sort(torch.cat((chosen, fill))).values


def sample_libra(
    labels: Tensor,
    matched_max_iou: Tensor,
    matched_gt_index: Tensor,
    num: int,
    positive_fraction: float,
    generator: torch.Generator | None = None,
    num_bins: int = 3,
    floor_thr: float = -1.0,
    floor_fraction: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Libra R-CNN sampling: instance-balanced positives, IoU-balanced negatives.

    ``labels`` (N,) as in :func:`sample_random`; ``matched_max_iou`` (N,) each candidate's best
    IoU with any GT; ``matched_gt_index`` (N,) its matched GT (read for positives only).
    Draws ``min(int(num * positive_fraction), #pos)`` positives and
    ``min(num - that, #neg)`` negatives. Returns ``(pos_mask, neg_mask)`` (N,) bool.
    """
    positive = torch.where(labels >= 1)[0]
    negative = torch.where(labels == 0)[0]
    num_pos = min(int(num * positive_fraction), positive.numel())
    chosen_pos = positive[sample_instance_balanced_positive(matched_gt_index[positive], num_pos, generator)]
    num_neg = min(num - chosen_pos.numel(), negative.numel())
    chosen_neg = negative[
        sample_iou_balanced_negative(
            matched_max_iou[negative], num_neg, generator, num_bins, floor_thr, floor_fraction
        )
    ]
    return _as_masks(labels, chosen_pos, chosen_neg)


def sample_hard_negatives_batched(
    labels: Tensor,
    neg_loss: Tensor,
    neg_pos_ratio: float = 3.0,
    min_negatives: int = 0,
) -> tuple[Tensor, Tensor]:
    """Hard negative mining (SSD) for a batch: ``labels`` (B, N), ``neg_loss`` (B, N) ->
    ``(pos_mask, neg_mask)`` (B, N) bool.

    Per image (row): every positive (``labels >= 1``) is kept; of the negatives
    (``labels == 0``; ignored ``-1`` never enter) the ``k`` with the highest ``neg_loss`` are
    kept, ``k = min(max(int(neg_pos_ratio * num_pos), min_negatives), num_negatives)``. The SSD
    paper keeps "at most 3:1" negatives to positives (Liu et al., ECCV 2016, section 2.2),
    hence the default ratio 3. ``neg_loss`` is typically the classification loss of each
    candidate against the background class; only its values at negatives are read, and it is
    only ranked, so no gradient flows through the choice.

    Ties in ``neg_loss`` go to the lower index (stable sort), on every device. An image with no
    positive keeps ``min_negatives`` negatives; the default 0 keeps none, as torchvision's
    ``SSD.compute_loss`` does. Unlike there, the count never exceeds the negatives available,
    so a positive or an ignored candidate is never counted as a negative.
    """
    if labels.shape != neg_loss.shape or labels.dim() != 2:
        raise ValueError(
            f"labels and neg_loss must both be (B, N), got {tuple(labels.shape)} and {tuple(neg_loss.shape)}"
        )
    if neg_pos_ratio < 0 or min_negatives < 0:
        raise ValueError(f"neg_pos_ratio and min_negatives must be >= 0, got {neg_pos_ratio}, {min_negatives}")
    positive = labels >= 1
    negative = labels == 0
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = negative.sum(dim=1, keepdim=True)
    wanted = torch.floor(num_pos.to(torch.float64) * neg_pos_ratio).to(torch.int64)
    k = torch.minimum(torch.clamp(wanted, min=min_negatives), num_neg)  # (B, 1)

    # Rank the negatives of each row: loss descending, lower index first among equals; then
    # move every non-negative behind them (a second stable sort), so a negative's rank is its
    # place among the negatives only, whatever its loss (even -inf).
    by_loss = torch.sort(neg_loss.detach(), dim=1, descending=True, stable=True).indices
    by_kind = torch.sort((~negative.gather(1, by_loss)).to(torch.uint8), dim=1, stable=True).indices
    order = by_loss.gather(1, by_kind)  # (B, N): negatives, hardest first, then the rest
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous())
    neg_mask = negative & (rank < k)
    return positive, neg_mask


def sample_hard_negatives(
    labels: Tensor,
    neg_loss: Tensor,
    neg_pos_ratio: float = 3.0,
    min_negatives: int = 0,
) -> tuple[Tensor, Tensor]:
    """Hard negative mining for one image: ``labels`` (N,), ``neg_loss`` (N,) ->
    ``(pos_mask, neg_mask)`` (N,) bool; see :func:`sample_hard_negatives_batched`."""
    if labels.dim() != 1:
        raise ValueError(f"labels must be (N,), got shape {tuple(labels.shape)}")
    pos, neg = sample_hard_negatives_batched(labels[None], neg_loss[None], neg_pos_ratio, min_negatives)
    return pos[0], neg[0]
