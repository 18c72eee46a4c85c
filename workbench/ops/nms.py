"""Non-maximum suppression that records who suppressed whom.

Conventions: ``boxes`` (N, 4) xyxy, ``scores`` (N,), optional group ids ``idxs`` (N,) int64
(class or level; boxes of different groups never suppress each other).

Greedy NMS (as ``torchvision.ops.nms`` runs it) visits boxes in a *stable* descending sort of
the scores (equal scores: lower index first; see ``nms_kernel_impl`` in torchvision's
``csrc/ops/cpu/nms_kernel.cpp``); a visited box that is still alive is kept and kills every
later alive box whose IoU with it exceeds the threshold. So a suppressed box ``j`` was
suppressed by the *first kept box, in visiting order, that comes before ``j`` and overlaps it by
more than the threshold*: the ledger is a function of the keep set alone, and needs no
sequential replay. :func:`nms_with_ledger` takes ``keep`` from torchvision (so it is identical
by construction) and finds those first suppressors in blocks of (kept x still-unexplained)
pairs, dropping each suppressed box from later blocks once explained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor

__all__ = ["NmsLedger", "nms_with_ledger"]

# Pair-block sizes (kept rows x unexplained columns), tuned on 2 CPU cores: about 1 MB of
# float32 per intermediate keeps the block in cache; on a GPU bigger blocks pay off.
_BLOCK_ELEMENTS_CPU = 1 << 18
_BLOCK_ELEMENTS_CUDA = 1 << 24


@dataclass(frozen=True)
class NmsLedger:
    """The decisions of one NMS call over N boxes.

    - ``keep`` (K,) int64: kept indices, identical to (and in the order of)
      ``torchvision.ops.nms`` / ``batched_nms`` on the same input;
    - ``suppressed_by`` (N,) int64: ``-1`` for a kept box, else the index of the kept box that
      suppressed it;
    - ``suppressor_iou`` (N,) float: NaN for a kept box, else the IoU with its suppressor (the
      value NMS compared with the threshold, always ``> iou_threshold``);
    - ``iou_threshold``: the threshold NMS ran with.
    """

    keep: Tensor
    suppressed_by: Tensor
    suppressor_iou: Tensor
    iou_threshold: float

    @property
    def kept_mask(self) -> Tensor:
        """``(N,)`` bool: True for kept boxes."""
        return self.suppressed_by < 0

    def __len__(self) -> int:
        return int(self.suppressed_by.shape[0])

    def to_dict(self) -> dict[str, Tensor]:
        """Plain tensors (the threshold as a 0-d float64 tensor), e.g. for saving a trace."""
        return {
            "keep": self.keep,
            "suppressed_by": self.suppressed_by,
            "suppressor_iou": self.suppressor_iou,
            "iou_threshold": torch.tensor(self.iou_threshold, dtype=torch.float64),
        }


def nms_with_ledger(boxes: Tensor, scores: Tensor, iou_threshold: float, idxs: Tensor | None = None) -> NmsLedger:
    """NMS over ``boxes`` (N, 4) and ``scores`` (N,), per group when ``idxs`` (N,) is given.

    ``keep`` is ``torchvision.ops.nms(boxes, scores, iou_threshold)`` (``batched_nms`` with
    ``idxs``); see :class:`NmsLedger` for the rest. Works on any device torchvision's NMS does.
    """
    boxes = boxes.detach()
    scores = scores.detach()
    if boxes.dim() != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"need boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    if idxs is not None and idxs.shape != scores.shape:
        raise ValueError(f"idxs must be (N,) like scores, got {tuple(idxs.shape)}")
    iou_threshold = float(iou_threshold)
    num = boxes.shape[0]
    device = boxes.device
    suppressed_by = torch.full((num,), -1, dtype=torch.int64, device=device)
    suppressor_iou = torch.full((num,), float("nan"), dtype=boxes.dtype, device=device)
    if num == 0:
        keep = torch.zeros((0,), dtype=torch.int64, device=device)
        return NmsLedger(keep, suppressed_by, suppressor_iou, iou_threshold)

    if idxs is None:
        keep = torchvision.ops.nms(boxes, scores, iou_threshold)
        nms_boxes, problems = boxes, [None]
    else:
        keep = torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)
        nms_boxes, problems = _problems_as_torchvision_runs_them(boxes, idxs)

    rank = torch.empty(num, dtype=torch.int64, device=device)
    rank[torch.sort(scores, stable=True, descending=True).indices] = torch.arange(num, device=device)
    kept = torch.zeros(num, dtype=torch.bool, device=device)
    kept[keep] = True
    pairs = _PairIoU(nms_boxes, iou_threshold)
    for members in problems:
        _fill_ledger(pairs, rank, kept, members, suppressed_by, suppressor_iou)
    return NmsLedger(keep, suppressed_by, suppressor_iou, iou_threshold)


def _problems_as_torchvision_runs_them(boxes: Tensor, idxs: Tensor) -> tuple[Tensor, list[Tensor | None]]:
    """The boxes ``torchvision.ops.batched_nms`` runs NMS on, and the members of each problem
    (``None``: all boxes).

    It switches on the input size (torchvision/ops/boxes.py, ``batched_nms``): large inputs run
    one ``nms`` per group on the boxes as given; small ones run a single ``nms`` on boxes
    shifted apart per group (the "coordinate trick"), whose float rounding the ledger must
    share to agree with it.
    """
    vanilla_above = 4000 if boxes.device.type == "cpu" else 100_000
    if boxes.numel() > vanilla_above:
        return boxes, [torch.where(idxs == group)[0] for group in torch.unique(idxs)]
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return boxes + offsets[:, None], [None]


class _PairIoU:
    """IoU of blocks of box pairs, and its threshold test, with the arithmetic and comparison
    of torchvision's NMS kernel on the boxes' device.

    IoU is ``inter / (area_i + area_j - inter)`` in the boxes' dtype. The CPU kernel compares
    it with the threshold as a double, the CUDA kernel with the threshold rounded to float;
    torch casts a Python scalar to the tensor's dtype, so on CPU a threshold that rounds up
    (0.3 -> 0.30000001) is tested as ``>=`` the rounded value.
    """

    def __init__(self, boxes: Tensor, threshold: float) -> None:
        self.boxes_t = boxes.t().contiguous()  # (4, N): one contiguous row per coordinate
        self.area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        self.rounded = torch.tensor(threshold, dtype=boxes.dtype).item()
        self.inclusive = boxes.device.type == "cpu" and self.rounded > threshold

    def iou(self, rows: Tensor, cols: Tensor) -> Tensor:
        """``(len(rows), len(cols))`` IoU of boxes ``rows`` against boxes ``cols``."""
        a = self.boxes_t[:, rows].unsqueeze(2)
        b = self.boxes_t[:, cols].unsqueeze(1)
        inter_w = torch.min(a[2], b[2]).sub_(torch.max(a[0], b[0])).clamp_(min=0)
        inter_h = torch.min(a[3], b[3]).sub_(torch.max(a[1], b[1])).clamp_(min=0)
        inter = inter_w.mul_(inter_h)
        union = torch.add(self.area[rows][:, None], self.area[cols][None, :]).sub_(inter)
        return inter.div_(union)

    def exceeds(self, iou: Tensor) -> Tensor:
        """``iou > threshold`` as the kernel decides it."""
        return iou >= self.rounded if self.inclusive else iou > self.rounded


def _fill_ledger(
    pairs: _PairIoU,
    rank: Tensor,
    kept: Tensor,
    members: Tensor | None,
    suppressed_by: Tensor,
    suppressor_iou: Tensor,
) -> None:
    """Write the suppressor of every suppressed box among ``members`` (all boxes if None).

    ``rank`` (N,) is the visiting order, ``kept`` (N,) bool. Kept boxes are taken in blocks in
    rank order; each block is compared with the suppressed boxes not yet explained, and a
    suppressed box takes the first kept box (lowest rank) that precedes it and exceeds the
    threshold. Blocks hold about a fixed number of pairs, so they grow as boxes are explained.
    """
    device = rank.device
    order = torch.argsort(rank) if members is None else members[torch.argsort(rank[members])]
    kept_in_order = order[kept[order]]
    pending = order[~kept[order]]  # suppressed boxes in rank order, not yet explained
    kept_rank = rank[kept_in_order]
    budget = _BLOCK_ELEMENTS_CUDA if device.type == "cuda" else _BLOCK_ELEMENTS_CPU
    num_kept = kept_in_order.numel()
    start = 0
    while start < num_kept and pending.numel() > 0:
        num_pending = pending.numel()
        stop = min(num_kept, start + max(1, budget // num_pending))
        rows = kept_in_order[start:stop]
        iou = pairs.iou(rows, pending)
        row, col = torch.nonzero(pairs.exceeds(iou), as_tuple=True)
        # only a kept box visited before a suppressed box can have suppressed it
        first_col = torch.searchsorted(rank[pending], kept_rank[start:stop], right=True)
        valid = col >= first_col[row]
        row, col = row[valid], col[valid]
        first_row = torch.full((num_pending,), stop - start, dtype=torch.int64, device=device)
        first_row.scatter_reduce_(0, col, row, reduce="amin")
        explained = torch.where(first_row < stop - start)[0]
        suppressed_by[pending[explained]] = rows[first_row[explained]]
        suppressor_iou[pending[explained]] = iou[first_row[explained], explained].to(suppressor_iou.dtype)
        still = torch.ones(num_pending, dtype=torch.bool, device=device)
        still[explained] = False
        pending = pending[still]
        start = stop
    if pending.numel() > 0:
        _explain_leftovers(pairs, rank, kept_in_order, pending, suppressed_by, suppressor_iou)


def _explain_leftovers(
    pairs: _PairIoU,
    rank: Tensor,
    kept_in_order: Tensor,
    pending: Tensor,
    suppressed_by: Tensor,
    suppressor_iou: Tensor,
) -> None:
    """Suppressed boxes for which no earlier kept box exceeds the threshold in this arithmetic.

    This can only happen when a device's NMS kernel rounds an IoU at the threshold differently
    (the CUDA kernel may fuse multiply-adds); on CPU the arithmetic is the kernel's and this is
    never reached. Such a box is attributed to the earlier kept box of highest IoU.
    """
    kept_rank = rank[kept_in_order]
    for start in range(0, pending.numel(), 1024):
        cols = pending[start : start + 1024]
        iou = pairs.iou(kept_in_order, cols).nan_to_num(nan=-1.0)
        earlier = kept_rank[:, None] < rank[cols][None, :]
        iou = torch.where(earlier, iou, torch.full_like(iou, -2.0))
        best_iou, best_row = iou.max(dim=0)
        has_one = best_iou > -2.0
        suppressed_by[cols[has_one]] = kept_in_order[best_row[has_one]]
        suppressor_iou[cols[has_one]] = best_iou[has_one].to(suppressor_iou.dtype)
