"""Box maths on plain tensors.

Conventions:
- boxes are float tensors whose last dimension holds 4 numbers; ``xyxy`` is
  ``(x1, y1, x2, y2)`` in absolute pixels (the workbench's internal format), ``xywh`` is
  ``(x1, y1, w, h)`` and ``cxcywh`` is ``(cx, cy, w, h)``;
- shapes: ``(..., 4)`` for the format conversions, ``(N, 4)`` elsewhere;
- ``image_size`` is ``(height, width)``, as in torchvision.

``box_area`` and ``box_iou`` use the same arithmetic, in the same order, as
``torchvision.ops.box_area`` / ``torchvision.ops.box_iou``, so their results are bitwise equal.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_xyxy_to_xywh",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_cxcywh_to_xyxy",
    "box_area",
    "box_iou",
    "pairwise_iou",
    "clip_boxes",
    "nondegenerate",
    "size_at_least",
    "scale_boxes",
]


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` xywh."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xywh -> ``(..., 4)`` xyxy."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` cxcywh."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` cxcywh -> ``(..., 4)`` xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    half_w = 0.5 * w
    half_h = 0.5 * h
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def _upcast(t: Tensor) -> Tensor:
    """Half precision to float32 and small ints to int64, so products do not overflow."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes: ``(N, 4)`` -> ``(N,)``. Inverted boxes give negative areas."""
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair: ``(N, 4)``, ``(M, 4)`` xyxy -> ``(N, M)``.

    Boxes of zero area against each other give NaN (0 / 0), as in torchvision.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = _upcast(bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of aligned pairs: ``(N, 4)``, ``(N, 4)`` xyxy -> ``(N,)``; row ``i`` of the result is
    ``box_iou(boxes1, boxes2)[i, i]``."""
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"pairwise_iou needs aligned boxes, got shapes {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.max(boxes1[:, :2], boxes2[:, :2])
    bottom_right = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    wh = _upcast(bottom_right - top_left).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area1 + area2 - inter
    return inter / union


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clamp xyxy boxes ``(..., 4)`` to ``[0, width] x [0, height]``; ``image_size`` is (h, w)."""
    height, width = image_size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def nondegenerate(boxes: Tensor, min_size: float = 0.0) -> Tensor:
    """``(N, 4)`` xyxy -> ``(N,)`` bool: width and height both strictly greater than ``min_size``."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return (widths > min_size) & (heights > min_size)


def size_at_least(boxes: Tensor, min_size: float) -> Tensor:
    """``(N, 4)`` xyxy -> ``(N,)`` bool: width and height both ``>= min_size``.

    This is the test of ``torchvision.ops.remove_small_boxes`` (which returns the indices
    ``size_at_least(boxes, min_size).nonzero()``), e.g. the RPN's ``min_size=1e-3`` filter.
    """
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return (widths >= min_size) & (heights >= min_size)


def scale_boxes(boxes: Tensor, scale_x: float | Tensor, scale_y: float | Tensor) -> Tensor:
    """Multiply x coordinates by ``scale_x`` and y coordinates by ``scale_y``: ``(..., 4)``.

    Maps boxes between a resized image and its original (``scale_x = original_w / resized_w``).
    The factors are applied in the boxes' dtype, like torchvision's ``resize_boxes``.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y), dim=-1)
