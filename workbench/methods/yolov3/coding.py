"""YOLOv3 anchors and box coding.

Anchors: level ``l`` (stride ``s_l``) has the anchor shapes ``shapes[l]`` (``(w, h)`` in
network-input pixels, 3 per level by default: darknet's ``mask`` of the nine shapes) at every
cell, centred on the cell centre ``((x + 1/2) s, (y + 1/2) s)``; ordered (level, y, x, anchor)
as every dense detector here.

Coding (YOLOv3 section 2.1): a prediction ``(tx, ty, tw, th)`` at the cell whose top-left corner
is ``(c_x, c_y) s`` gives the box centre ``(c_x + sigmoid(tx)) s`` (the offset stays inside the
cell) and the size ``(p_w exp(tw), p_h exp(th))`` with ``(p_w, p_h)`` the anchor's. Targets:
``sigmoid(tx)``'s target is ``g_x / s - c_x`` in ``[0, 1]`` (the coordinate loss compares it with
``sigmoid(tx)``), ``tw``'s is ``log(g_w / p_w)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from workbench.modeling.anchor_generator import Anchors

#: The nine anchor shapes of YOLOv3 (``yolov3.cfg``), ``(w, h)`` pixels, smallest first.
YOLOV3_ANCHORS: tuple[tuple[float, float], ...] = (
    (10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326),
)

#: Largest ``tw`` / ``th`` fed to ``exp`` when decoding (as the R-CNN coder's clamp).
WH_CLAMP = math.log(1000.0 / 16)


def shapes_per_level(shapes: Sequence[Sequence[float]], num_levels: int = 3) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Split the shapes (smallest first) evenly over the levels, the smallest on the finest
    level (darknet's masks 0,1,2 / 3,4,5 / 6,7,8)."""
    if len(shapes) % num_levels:
        raise ValueError(f"{len(shapes)} anchor shapes do not split evenly over {num_levels} levels")
    per = len(shapes) // num_levels
    pairs = [(float(w), float(h)) for w, h in shapes]
    return tuple(tuple(pairs[l * per:(l + 1) * per]) for l in range(num_levels))


class YOLOAnchors(Anchors):
    """Anchor generator (:class:`~workbench.modeling.anchor_generator.Anchors`): per level the
    level's anchor shapes centred on the cells (stride ``padded // H_l``)."""

    def __init__(self, shapes: Sequence[Sequence[Sequence[float]]]) -> None:
        super().__init__()
        self.shapes = tuple(tuple((float(w), float(h)) for w, h in level) for level in shapes)

    def num_anchors_per_location(self) -> list[int]:
        return [len(level) for level in self.shapes]

    def anchors(self, padded_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]], dtype: torch.dtype,
                device: torch.device | str) -> list[Tensor]:
        out = []
        for (fh, fw), level in zip(feature_sizes, self.shapes):
            sy, sx = padded_size[0] // fh, padded_size[1] // fw
            ys = (torch.arange(fh, dtype=dtype, device=device) + 0.5) * sy
            xs = (torch.arange(fw, dtype=dtype, device=device) + 0.5) * sx
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            wh = torch.tensor(level, dtype=dtype, device=device)  # (A, 2)
            centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)
            half = wh[None] / 2
            out.append(torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4))
        return out


def anchor_strides(level_counts: Sequence[int], strides: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
    """``(A,)`` the stride of every anchor, from the anchors per level."""
    return torch.repeat_interleave(
        torch.tensor([float(s) for s in strides], dtype=dtype, device=device),
        torch.tensor(list(level_counts), device=device),
    )


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(gt_boxes: Tensor, anchors: Tensor, strides: Tensor) -> Tensor:
    """Targets ``(N, 4)``: the in-cell offsets of the GT centre (``[0, 1]``, compared with
    ``sigmoid(tx)``, ``sigmoid(ty)``) and ``log(g / p)`` of its sizes, for GT boxes and anchors
    ``(N, 4)`` and the anchors' strides ``(N,)``."""
    gx, gy, gw, gh = _centre_size(gt_boxes)
    ax, ay, aw, ah = _centre_size(anchors)
    left, top = ax - 0.5 * strides, ay - 0.5 * strides
    return torch.stack([(gx - left) / strides, (gy - top) / strides, torch.log(gw / aw), torch.log(gh / ah)], dim=-1)


def decode(deltas: Tensor, anchors: Tensor, strides: Tensor, clamp: float = WH_CLAMP) -> Tensor:
    """Boxes ``(..., 4)`` xyxy from raw predictions ``(tx, ty, tw, th)`` ``(..., 4)``, anchors
    ``(..., 4)`` and strides ``(...)``."""
    ax, ay, aw, ah = _centre_size(anchors)
    cx = ax + (torch.sigmoid(deltas[..., 0]) - 0.5) * strides
    cy = ay + (torch.sigmoid(deltas[..., 1]) - 0.5) * strides
    w = aw * torch.exp(deltas[..., 2].clamp(max=clamp))
    h = ah * torch.exp(deltas[..., 3].clamp(max=clamp))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


__all__ = ["WH_CLAMP", "YOLOAnchors", "YOLOV3_ANCHORS", "anchor_strides", "decode", "encode", "shapes_per_level"]
