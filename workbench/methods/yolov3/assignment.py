"""YOLOv3's assignment of ground truth to anchors (darknet's ``forward_yolo_layer``).

- Each GT goes to the best of all anchor shapes (IoU of the shapes, both centred at the origin)
  over every level; the anchor of that shape at the cell holding the GT centre becomes positive
  (at most one anchor per GT). When two GT claim the same anchor, the later GT keeps it (darknet
  loops over the truths and overwrites).
- Every other anchor is negative, unless its *predicted* box overlaps some GT with IoU above
  ``ignore_thresh`` (0.5, ``YOLOv3Config.ignore_thresh``): then it is ignored in the
  objectness loss (label -1).
- GT flagged ``ignore`` (crowd / difficult) are never assigned, and predictions overlapping them
  above the threshold are ignored as well.

Shapes: anchors ``(A, 4)`` xyxy (cell centred, see :mod:`~workbench.methods.yolov3.coding`),
``anchor_shape`` ``(A,)`` index of each anchor's shape in the flat list of all shapes
``(S, 2)``; predicted boxes ``(A, 4)``; GT ``(G, 4)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.modeling.assignment import Assignment
from workbench.ops import box_iou

#: Shift (pixels) that breaks the tie of a GT centre on a cell edge towards the higher cell.
EDGE_SHIFT = 1e-3


def shape_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of boxes given only by ``(w, h)`` and sharing a centre: ``(G, 2), (S, 2) -> (G, S)``."""
    inter = torch.min(wh1[:, None, 0], wh2[None, :, 0]) * torch.min(wh1[:, None, 1], wh2[None, :, 1])
    area1 = wh1[:, 0] * wh1[:, 1]
    area2 = wh2[:, 0] * wh2[:, 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def best_anchor_at_centre(anchors: Tensor, anchor_shape: Tensor, shapes: Tensor, gt_boxes: Tensor) -> Tensor:
    """``(G,)`` the anchor each GT goes to: the one of its best shape whose centre is nearest the
    GT centre, i.e. at the cell holding it (a centre on a cell edge goes to the cell of higher
    index, as darknet's ``floor(x / stride)``: the distances are taken after a shift of
    ``EDGE_SHIFT`` pixels)."""
    gt_wh = gt_boxes[:, 2:] - gt_boxes[:, :2]
    best_shape = shape_iou(gt_wh, shapes).argmax(dim=1)  # (G,)
    gt_centre = 0.5 * (gt_boxes[:, :2] + gt_boxes[:, 2:])
    anchor_centre = 0.5 * (anchors[:, :2] + anchors[:, 2:])
    distance = (gt_centre[:, None] - anchor_centre[None] + EDGE_SHIFT).abs().amax(dim=-1)  # (G, A), L-infinity
    distance = torch.where(anchor_shape[None] == best_shape[:, None], distance, torch.full_like(distance, float("inf")))
    return distance.argmin(dim=1)


def assign(
    anchors: Tensor,
    anchor_shape: Tensor,
    shapes: Tensor,
    pred_boxes: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_ignore: Tensor | None,
    ignore_thresh: float,
) -> Assignment:
    """One image's :class:`Assignment`: ``labels`` (A,) the GT class (positives), 0
    (negatives) or -1 (ignored); ``matched_gt`` (A,) the GT of each positive (0 elsewhere);
    ``max_iou`` (A,) the best IoU of each *predicted* box with a GT (0 without GT).
    ``gt_ignore``: the GT flagged ``ignore`` (``None``: none); ``ignore_thresh`` is the
    detector's setting (its config holds the value), so it has no default here."""
    num = anchors.shape[0]
    device = anchors.device
    labels = torch.zeros(num, dtype=torch.int64, device=device)
    matched = torch.zeros(num, dtype=torch.int64, device=device)
    if gt_boxes.shape[0] == 0:
        return Assignment(labels, matched, torch.zeros(num, dtype=anchors.dtype, device=device))
    iou = box_iou(pred_boxes.detach(), gt_boxes)  # (A, G)
    max_iou = iou.max(dim=1).values
    labels[max_iou > ignore_thresh] = -1
    usable = torch.ones(gt_boxes.shape[0], dtype=torch.bool, device=device) if gt_ignore is None else ~gt_ignore.bool()
    gt_index = torch.where(usable)[0]
    if gt_index.numel() > 0:
        chosen = best_anchor_at_centre(anchors, anchor_shape, shapes, gt_boxes[gt_index])
        # the later GT keeps a shared anchor: drop every GT whose anchor a later GT claims
        # (pairwise, so the kept anchors are distinct and the writes below deterministic)
        order = torch.arange(chosen.numel(), device=device)
        claimed_later = ((chosen[:, None] == chosen[None, :]) & (order[None, :] > order[:, None])).any(dim=1)
        anchors_kept, owners = chosen[~claimed_later], gt_index[~claimed_later]
        matched[anchors_kept] = owners
        labels[anchors_kept] = gt_labels[owners].to(torch.int64)
    if gt_ignore is not None and gt_ignore.any():
        max_iou = iou[:, usable].max(dim=1).values if usable.any() else torch.zeros_like(max_iou)
    return Assignment(labels, matched, max_iou)


__all__ = ["assign", "best_anchor_at_centre", "shape_iou"]
