"""Training boxes with a uniform IoU distribution, jittered from the ground truth (IoU-uniform
R-CNN, Zhu et al.: ``papers/iou-uniform-rcnn.md`` section 3.1, equation (1)).

For every GT box and every IoU interval, ``num_candidates`` jittered copies of the box are drawn
at once: the centre moves by ``U(-s, s)`` times the box's width (x) and height (y), the width and
height are scaled by ``U(lo, hi)`` each, the result is clipped to the image, and a candidate is
kept when its IoU with its own GT lies in the interval and no other GT overlaps it more. The first
``per_interval`` kept candidates of each (GT, interval) are returned. Candidates are i.i.d., so
the first ``k`` valid ones are a uniform choice among the valid ones.

The whole draw is one tensor of shape (G, I, N, 4) (G GT boxes, I intervals, N candidates), so
there is no Python loop over the GT boxes (the authors' code, zl1994/IoU-Uniform-R-CNN, loops
over them). The IoU with the own GT is computed first for every candidate; only those close to
their interval (a few in ten) get their IoU with every GT, in chunks small enough for the cache.

Conventions (as in :mod:`workbench.ops.boxes`): boxes are ``xyxy`` absolute pixels,
``image_size`` is ``(height, width)``. Interval ``k`` is ``[lo_k, hi_k)``, except the last one,
which is closed, ``[lo, hi]`` (so an IoU of exactly 1 belongs to ``(0.8, 1.0)``). IoUs are those
of :func:`workbench.ops.box_iou`, computed as a matcher computes them, so a box matcher that
sees the returned boxes finds the same IoU and the same best GT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from workbench.ops.boxes import box_iou, clip_boxes, pairwise_iou

__all__ = [
    "DEFAULT_INTERVALS",
    "DEFAULT_JITTER",
    "interval_of",
    "jitter_settings",
    "uniform_iou_samples",
]

#: The paper's IoU intervals (section 4.1: N = 4 intervals).
DEFAULT_INTERVALS: tuple[tuple[float, float], ...] = ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.0))

#: Jitter per interval, from the authors' code (zl1994/IoU-Uniform-R-CNN; ``../shared/METHODS.md``
#: section 2): interval -> (centre offset bound ``s``, scale range ``(lo, hi)``). A narrower
#: jitter for a higher interval keeps enough of the 500 candidates inside it.
DEFAULT_JITTER: dict[tuple[float, float], tuple[float, tuple[float, float]]] = {
    (0.5, 0.6): (0.75, (0.5, 2.0)),
    (0.6, 0.7): (0.5, (0.6, 1.6)),
    (0.7, 0.8): (0.3, (0.7, 1.4)),
    (0.8, 1.0): (0.125, (0.8, 1.25)),
}

#: Most IoU entries (GT x candidates) computed at once (few enough to stay in the cache).
_CHUNK_ELEMENTS = 1 << 16
#: Margin of the first, rough interval test (its IoU may differ from box_iou's in the last bit).
_MARGIN = 1e-4


def jitter_settings(
    intervals: Sequence[Sequence[float]],
    offsets: Sequence[float] | None = None,
    scales: Sequence[Sequence[float]] | None = None,
) -> tuple[tuple[float, ...], tuple[tuple[float, float], ...]]:
    """The centre offset bounds and scale ranges of ``intervals``: those given, else the
    :data:`DEFAULT_JITTER` of each interval (an interval without a default needs them given)."""
    keys = [(float(lo), float(hi)) for lo, hi in intervals]
    if offsets is None or scales is None:
        missing = [k for k in keys if k not in DEFAULT_JITTER]
        if missing:
            raise ValueError(
                f"no default jitter for the intervals {missing}; give offsets and scales "
                f"(defaults exist for {sorted(DEFAULT_JITTER)})"
            )
    s = tuple(float(v) for v in offsets) if offsets is not None else tuple(DEFAULT_JITTER[k][0] for k in keys)
    r = (tuple((float(lo), float(hi)) for lo, hi in scales) if scales is not None
         else tuple(DEFAULT_JITTER[k][1] for k in keys))
    if len(s) != len(keys) or len(r) != len(keys):
        raise ValueError(f"{len(keys)} intervals need as many offsets and scale ranges, got {len(s)} and {len(r)}")
    for (lo, hi), bound, (slo, shi) in zip(keys, s, r):
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"an IoU interval needs 0 <= lo < hi <= 1, got ({lo}, {hi})")
        if bound < 0 or not 0.0 < slo <= shi:
            raise ValueError(f"jitter of ({lo}, {hi}): offset bound {bound} and scale range ({slo}, {shi}) "
                             "must be >= 0 and 0 < lo <= hi")
    return s, r


def interval_of(ious: Tensor, intervals: Sequence[Sequence[float]]) -> Tensor:
    """Index of the first interval holding each IoU, ``-1`` for none: ``(...)`` -> ``(...)``
    int64. Intervals are half-open ``[lo, hi)`` except the last, closed ``[lo, hi]``."""
    index = torch.full(ious.shape, -1, dtype=torch.int64, device=ious.device)
    last = len(intervals) - 1
    for k in range(last, -1, -1):  # the first interval wins where intervals overlap
        lo, hi = intervals[k]
        inside = (ious >= lo) & ((ious <= hi) if k == last else (ious < hi))
        index = torch.where(inside, torch.full_like(index, k), index)
    return index


def uniform_iou_samples(
    gt_boxes: Tensor,
    image_size: tuple[int, int],
    intervals: Sequence[Sequence[float]] = DEFAULT_INTERVALS,
    per_interval: int = 16,
    num_candidates: int = 500,
    generator: torch.Generator | None = None,
    *,
    offsets: Sequence[float] | None = None,
    scales: Sequence[Sequence[float]] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Jittered copies of the GT boxes in each IoU interval (see the module docstring).

    Args:
        gt_boxes: (G, 4) xyxy.
        image_size: ``(height, width)``; samples are clipped to it.
        intervals: I intervals ``(lo, hi)`` of IoU with the own GT.
        per_interval: most samples kept per (GT, interval).
        num_candidates: candidates drawn per (GT, interval).
        generator: the only source of randomness (``None``: torch's default generator).
        offsets: I centre offset bounds ``s`` (default :data:`DEFAULT_JITTER` of each interval).
        scales: I scale ranges ``(lo, hi)`` of width and height (default as ``offsets``).

    Returns:
        ``(boxes (M, 4), gt_index (M,) int64, ious (M,), interval_index (M,) int64)``, ordered by
        GT, then interval, then draw; ``ious`` are with the own GT, which is a best-overlapping GT.
        ``M <= G * I * per_interval``; empty for no GT.
    """
    s, r = jitter_settings(intervals, offsets, scales)
    if per_interval < 0 or num_candidates < 0:
        raise ValueError(f"per_interval and num_candidates must be >= 0, got {per_interval}, {num_candidates}")
    device = gt_boxes.device
    dtype = gt_boxes.dtype if gt_boxes.is_floating_point() else torch.float32
    gt_boxes = gt_boxes.to(dtype)
    num_gt, num_intervals = int(gt_boxes.shape[0]), len(s)
    if num_gt == 0 or num_candidates == 0 or per_interval == 0:
        empty = torch.zeros((0,), dtype=torch.int64, device=device)
        return gt_boxes.new_zeros((0, 4)), empty, gt_boxes.new_zeros((0,)), empty.clone()

    gen_device = generator.device if generator is not None else device
    u = torch.rand((num_gt, num_intervals, num_candidates, 4), generator=generator, device=gen_device, dtype=dtype)
    u = u.to(device)
    bound = torch.tensor(s, dtype=dtype, device=device).view(1, -1, 1, 1)
    scale_lo = torch.tensor([lo for lo, _ in r], dtype=dtype, device=device).view(1, -1, 1, 1)
    scale_hi = torch.tensor([hi for _, hi in r], dtype=dtype, device=device).view(1, -1, 1, 1)
    offset = (2.0 * u[..., :2] - 1.0) * bound  # U(-s, s) for x and y
    scale = scale_lo + u[..., 2:] * (scale_hi - scale_lo)  # U(lo, hi) for w and h

    wh = (gt_boxes[:, 2:] - gt_boxes[:, :2]).view(num_gt, 1, 1, 2)
    centre = ((gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2).view(num_gt, 1, 1, 2)
    new_centre = centre + offset * wh
    new_half = scale * wh / 2
    candidates = clip_boxes(torch.cat((new_centre - new_half, new_centre + new_half), dim=-1), image_size)

    # the interval test with the own GT first, on aligned pairs (cheap), with a margin: it only
    # spares the full IoU (with every GT) of the candidates that cannot be kept
    lo = torch.tensor([float(a) for a, _ in intervals], dtype=dtype, device=device).view(1, -1, 1)
    hi = torch.tensor([float(b) for _, b in intervals], dtype=dtype, device=device).view(1, -1, 1)
    rough = pairwise_iou(candidates.reshape(-1, 4), gt_boxes.repeat_interleave(num_intervals * num_candidates, 0))
    rough = rough.view(num_gt, num_intervals, num_candidates)
    near = torch.where((rough >= lo - _MARGIN) & (rough <= hi + _MARGIN))

    # the IoU of those candidates with every GT, as a matcher computes it (box_iou), in chunks
    flat = candidates[near]
    own_gt = near[0]
    own_iou = torch.empty(flat.shape[0], dtype=dtype, device=device)
    best_iou = torch.empty_like(own_iou)
    chunk = max(1, _CHUNK_ELEMENTS // num_gt)
    for start in range(0, flat.shape[0], chunk):
        part = slice(start, start + chunk)
        iou = box_iou(gt_boxes, flat[part]).nan_to_num(0.0)  # (G, n); 0 / 0 of empty boxes -> 0
        own_iou[part] = iou.gather(0, own_gt[part].view(1, -1)).view(-1)
        best_iou[part] = iou.max(dim=0).values
    k_near = near[1]
    lo_near, hi_near = lo.view(-1)[k_near], hi.view(-1)[k_near]
    below_hi = torch.where(k_near == num_intervals - 1, own_iou <= hi_near, own_iou < hi_near)
    valid = torch.zeros((num_gt, num_intervals, num_candidates), dtype=torch.bool, device=device)
    valid[near] = (own_iou >= lo_near) & below_hi & (own_iou >= best_iou)
    all_iou = torch.zeros_like(rough)
    all_iou[near] = own_iou
    kept = valid & (valid.cumsum(dim=2) <= per_interval)

    g, k, _ = torch.nonzero(kept, as_tuple=True)  # row-major: GT, then interval, then draw
    return candidates[kept], g, all_iou[kept], k
