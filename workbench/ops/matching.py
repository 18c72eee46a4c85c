"""Matching candidates (anchors, proposals) to ground truth by an IoU matrix.

Conventions: ``iou`` is ``(G, A)``: G ground-truth boxes (rows) by A candidates (columns);
``*_batched`` functions take ``(B, G, A)``, images padded to the same G.
A match vector is ``(A,)`` int64 holding a GT index ``>= 0`` or one of the negative codes
:data:`BELOW_LOW` (background) and :data:`BETWEEN` (ignored), the codes of
``torchvision.models.detection._utils.Matcher``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "BELOW_LOW",
    "BETWEEN",
    "bipartite_match",
    "bipartite_match_batched",
    "mark_ignored",
    "match_boxes",
    "match_boxes_ssd",
    "match_boxes_ssd_batched",
]

#: Best IoU below the low threshold: a negative (background) candidate.
BELOW_LOW = -1
#: Best IoU in ``[low, high)``, or overlapping an ignore region: left out of the loss.
BETWEEN = -2


def match_boxes(iou: Tensor, high: float, low: float, allow_low_quality: bool = False) -> Tensor:
    """Best GT of each candidate: ``(G, A)`` -> ``(A,)`` int64.

    A candidate whose best IoU is ``>= high`` gets that GT's index, ``< low`` gets
    :data:`BELOW_LOW`, in between :data:`BETWEEN` (``high == low`` leaves no band).
    ``allow_low_quality`` (Faster R-CNN's RPN rule, as torchvision's ``Matcher``): for each GT,
    every candidate tied at that GT's highest IoU is restored to *its own* best GT, even below
    ``low``. Like torchvision, a GT that overlaps nothing has highest IoU 0, so it restores
    every candidate with IoU 0 to it. With no GT (G = 0) every candidate is :data:`BELOW_LOW`.
    """
    if low > high:
        raise ValueError(f"low threshold {low} is above high threshold {high}")
    if iou.dim() != 2:
        raise ValueError(f"iou must be (G, A), got shape {tuple(iou.shape)}")
    num_gt, num_candidates = iou.shape
    if num_gt == 0 or num_candidates == 0:
        return torch.full((num_candidates,), BELOW_LOW, dtype=torch.int64, device=iou.device)

    best_iou, best_gt = iou.max(dim=0)
    matched = torch.where(
        best_iou < low,
        BELOW_LOW,
        torch.where((best_iou >= low) & (best_iou < high), BETWEEN, best_gt),
    )
    if allow_low_quality:
        best_per_gt = iou.max(dim=1).values
        restored = (iou == best_per_gt[:, None]).any(dim=0)
        matched = torch.where(restored, best_gt, matched)
    return matched


def bipartite_match(iou: Tensor) -> Tensor:
    """Greedy one-to-one matching of GTs to candidates: ``(G, A)`` -> ``(G,)`` int64.

    The rule of Caffe SSD's bipartite step (``MatchBBox`` in ``bbox_util.cpp``, also used by
    RefineDet): repeatedly take the highest IoU left in the matrix, give that candidate to that
    GT, and remove both the GT's row and the candidate's column. A GT whose best candidate is
    taken by a GT that overlaps it more therefore gets its next best free candidate instead of
    nothing. Only IoU ``> 0`` can match: a GT that overlaps no free candidate gets ``-1``
    (Caffe keeps only overlaps above 1e-6, so an all-zero GT forces nothing there either).

    Ties are broken by position, so the result is the same on every device and for every
    order of evaluation: among equal IoUs the lowest candidate index wins, then the lowest GT
    index (Caffe scans candidates in the outer loop and keeps the first strict maximum, which
    is the same order). ``torch.argmax`` returns the first maximum on CPU and CUDA alike, and
    no write has a duplicate index, so nothing relies on the winner of duplicate indices in
    ``index_put``. See :func:`bipartite_match_batched` for the cost.
    """
    if iou.dim() != 2:
        raise ValueError(f"iou must be (G, A), got shape {tuple(iou.shape)}")
    return bipartite_match_batched(iou[None])[0]


def bipartite_match_batched(iou: Tensor) -> Tensor:
    """:func:`bipartite_match` for B images at once: ``(B, G, A)`` -> ``(B, G)`` int64.

    Images with fewer GTs are padded with rows of IoU ``<= 0`` (e.g. ``-1``): such a row never
    matches. Row ``i`` of the result is exactly ``bipartite_match(iou[i])``.

    Cost: ``min(G, A)`` steps for the whole batch, each an argmax over ``(B, K * G)`` where
    ``K`` is at most ``G * min(G, A)`` candidates (each GT's first ``min(G, A)`` candidates by
    IoU, the only ones that can ever be its match), or all ``A`` when that is fewer. No step
    reads a value back to the host, so on CUDA the loop only queues kernels.
    """
    if iou.dim() != 3:
        raise ValueError(f"iou must be (B, G, A), got shape {tuple(iou.shape)}")
    batch, num_gt, num_candidates = iou.shape
    device = iou.device
    forced = torch.full((batch, num_gt), -1, dtype=torch.int64, device=device)
    steps = min(num_gt, num_candidates)
    if steps == 0 or batch == 0:
        return forced

    # Candidate columns worth looking at, per image in ascending index order, each once (a
    # repeated column is switched off). GT g's step-t match is its best free candidate, and at
    # most t < min(G, A) candidates are taken before it, so its first min(G, A) candidates in
    # (IoU descending, index ascending) order always contain it.
    if num_gt * steps < num_candidates:
        # each row's `steps` first candidates: all above its steps-th largest IoU, then those
        # equal to it by ascending index (exactly `steps` per row; topk alone orders ties freely)
        top = torch.topk(iou, steps, dim=2).values
        kth = top[..., -1:]
        above = iou > kth
        at = iou == kth
        wanted_at = steps - (top > kth).sum(dim=2, keepdim=True)  # every entry above kth is in top
        first_at = at & (torch.cumsum(at.to(torch.int32), dim=2) <= wanted_at)
        order = torch.topk((above | first_at).to(torch.uint8), steps, dim=2).indices  # (B, G, steps)
        columns = torch.sort(order.reshape(batch, -1), dim=1).values  # (B, K)
        repeated = torch.zeros(columns.shape, dtype=torch.bool, device=device)
        repeated[:, 1:] = columns[:, 1:] == columns[:, :-1]
    else:
        columns = torch.arange(num_candidates, device=device).expand(batch, num_candidates)
        repeated = torch.zeros(columns.shape, dtype=torch.bool, device=device)
    num_columns = columns.shape[1]

    # work is (B, K, G): a row-major flat argmax per image = lowest candidate, then lowest GT.
    # Non-positive IoU and switched-off columns read -1 and can never be taken.
    work = torch.gather(iou, 2, columns[:, None, :].expand(batch, num_gt, num_columns)).transpose(1, 2)
    work = torch.where((work > 0) & ~repeated[..., None], work, torch.full_like(work, -1.0))
    flat = work.reshape(batch, num_columns * num_gt).contiguous()
    cells = flat.view(-1)  # shares storage with flat: the fills below show through
    forced_cells = forced.view(-1)
    image = torch.arange(batch, device=device)
    base = image * (num_columns * num_gt)
    along_row = torch.arange(num_gt, device=device)
    along_column = torch.arange(num_columns, device=device) * num_gt
    for _ in range(steps):
        best = flat.argmax(dim=1)  # (B,): kept on the device, never read back
        row = torch.div(best, num_gt, rounding_mode="floor")
        gt = best - row * num_gt
        taken = cells.index_select(0, base + best) > 0
        slot = image * num_gt + gt  # one per image: distinct
        candidate = columns.gather(1, row[:, None])[:, 0]
        forced_cells.index_copy_(0, slot, torch.where(taken, candidate, forced_cells.index_select(0, slot)))
        # switch off the taken candidate's row and the GT's column, in every image; the only
        # position listed twice (the taken cell) is filled with the same value
        fill = torch.cat(
            [
                ((base + row * num_gt)[:, None] + along_row[None, :]).reshape(-1),
                ((base + gt)[:, None] + along_column[None, :]).reshape(-1),
            ]
        )
        cells.index_fill_(0, fill, -1.0)
    return forced


def match_boxes_ssd(iou: Tensor, threshold: float) -> Tensor:
    """SSD / RefineDet matching: ``(G, A)`` -> ``(A,)`` int64.

    Each GT first gets one candidate by :func:`bipartite_match` (the highest IoU first, a GT
    that loses its best candidate to a GT overlapping it more takes its next best free one, a
    GT overlapping nothing takes none); every other candidate whose best IoU is
    ``>= threshold`` matches that GT, the rest are :data:`BELOW_LOW`. This is Caffe SSD's
    ``bipartite`` + ``per_prediction`` matching.

    When the GTs' best candidates are distinct and have IoU > 0 the result is exactly that of
    ``torchvision.models.detection._utils.SSDMatcher``. It differs in two cases, both defects
    there: a GT whose IoU is 0 everywhere has argmax 0 and takes candidate 0 (even from a
    real match), and two GTs with the same best candidate are resolved by ``index_put`` with
    a duplicate index, whose winner is not defined on CUDA (the losing GT gets nothing).
    With no GT: all :data:`BELOW_LOW`.
    """
    if iou.dim() != 2:
        raise ValueError(f"iou must be (G, A), got shape {tuple(iou.shape)}")
    return match_boxes_ssd_batched(iou[None], threshold)[0]


def match_boxes_ssd_batched(iou: Tensor, threshold: float, gt_valid: Tensor | None = None) -> Tensor:
    """:func:`match_boxes_ssd` for B images at once: ``(B, G, A)`` -> ``(B, A)`` int64.

    ``gt_valid`` (B, G) bool marks the real GTs of each image when images are padded to the
    same G; padded rows never match (their IoU is not read). Row ``i`` of the result equals
    ``match_boxes_ssd(iou[i][gt_valid[i]], threshold)`` with GT indices into the padded rows.
    """
    if iou.dim() != 3:
        raise ValueError(f"iou must be (B, G, A), got shape {tuple(iou.shape)}")
    batch, num_gt, num_candidates = iou.shape
    device = iou.device
    if num_gt == 0 or num_candidates == 0:
        return torch.full((batch, num_candidates), BELOW_LOW, dtype=torch.int64, device=device)
    if gt_valid is not None:
        if gt_valid.shape != (batch, num_gt):
            raise ValueError(f"gt_valid must be {(batch, num_gt)}, got {tuple(gt_valid.shape)}")
        iou = torch.where(gt_valid[..., None], iou, torch.full_like(iou, -1.0))
    best_iou, best_gt = iou.max(dim=1)  # (B, A); the first maximum, as match_boxes
    matched = torch.where(best_iou >= threshold, best_gt, torch.full_like(best_gt, BELOW_LOW))
    forced = bipartite_match_batched(iou)  # (B, G): distinct candidates per image, or -1
    # owner[b, a]: the GT forced onto candidate a, or -1. Every index written is distinct: a GT
    # without a candidate writes to a slot of its own past the A candidates, dropped after.
    gt_index = torch.arange(num_gt, dtype=torch.int64, device=device).expand(batch, num_gt)
    slot = torch.where(forced >= 0, forced, num_candidates + gt_index)
    owner = torch.full((batch, num_candidates + num_gt), -1, dtype=torch.int64, device=device)
    owner = owner.scatter(1, slot, gt_index)[:, :num_candidates]
    return torch.where(owner >= 0, owner, matched)


def mark_ignored(matched: Tensor, iou_with_ignore: Tensor, threshold: float) -> Tensor:
    """Mark candidates overlapping ignore regions (e.g. COCO crowd boxes) as :data:`BETWEEN`.

    ``matched`` (A,) from :func:`match_boxes`; ``iou_with_ignore`` (I, A) between the I ignore
    boxes and the candidates. A candidate whose IoU with any ignore box is ``> threshold`` is
    set to :data:`BETWEEN`, whatever it was. Returns a new tensor; ``matched`` is not changed.
    """
    if iou_with_ignore.shape[0] == 0:
        return matched.clone()
    overlapping = (iou_with_ignore > threshold).any(dim=0)
    return torch.where(overlapping, torch.full_like(matched, BETWEEN), matched)
