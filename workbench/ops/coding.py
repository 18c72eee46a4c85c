"""Box regression targets: the (dx, dy, dw, dh) parametrisation of R-CNN.

Conventions:
- ``reference_boxes`` are the boxes a prediction is relative to (anchors, proposals, priors),
  ``gt_boxes`` the boxes to reach; both ``(N, 4)`` absolute xyxy;
- ``deltas`` are ``(N, 4)`` or, for K boxes per reference (per-class regression),
  ``(N, 4 * K)`` laid out ``[dx0, dy0, dw0, dh0, dx1, ...]`` or ``(N, K, 4)``;
- with weights ``(wx, wy, ww, wh)``: ``dx = wx * (gx - rx) / rw``, ``dw = ww * log(gw / rw)``
  (Girshick et al., R-CNN / Fast R-CNN). SSD and RefineDet write the same code with
  "variances" ``v``: the weights are ``1 / v`` (``(0.1, 0.1, 0.2, 0.2)`` -> ``(10, 10, 5, 5)``).

The arithmetic follows ``torchvision.models.detection._utils.BoxCoder`` step by step (same
operations, same order), so encoded targets and decoded boxes are bitwise equal to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BoxCoder", "DEFAULT_SCALE_CLAMP"]

#: Largest ``dw``/``dh`` fed to ``exp`` when decoding (Detectron / torchvision ``bbox_xform_clip``).
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class BoxCoder:
    """Encodes boxes as deltas relative to reference boxes and decodes them back.

    ``weights`` scale (dx, dy, dw, dh); ``clamp`` bounds dw and dh (after un-weighting) before
    ``exp`` in :meth:`decode`, so a wild prediction cannot overflow.
    """

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    clamp: float = DEFAULT_SCALE_CLAMP

    def __post_init__(self) -> None:
        if len(self.weights) != 4:
            raise ValueError(f"BoxCoder needs 4 weights, got {self.weights!r}")
        if any(w <= 0 for w in self.weights):
            raise ValueError(f"BoxCoder weights must be positive, got {self.weights!r}")
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    @classmethod
    def from_variances(
        cls,
        variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2),
        clamp: float = DEFAULT_SCALE_CLAMP,
    ) -> "BoxCoder":
        """The coder of SSD / RefineDet "variances" ``v``: weights ``1 / v``."""
        if len(variances) != 4 or any(v <= 0 for v in variances):
            raise ValueError(f"need 4 positive variances, got {variances!r}")
        return cls(tuple(1.0 / v for v in variances), clamp)  # type: ignore[arg-type]

    def encode(self, gt_boxes: Tensor, reference_boxes: Tensor) -> Tensor:
        """Deltas that take ``reference_boxes`` (N, 4) to ``gt_boxes`` (N, 4): ``(N, 4)``.

        Computed in ``gt_boxes``' dtype.
        """
        if gt_boxes.shape != reference_boxes.shape:
            raise ValueError(
                f"encode needs aligned boxes, got {tuple(gt_boxes.shape)} and {tuple(reference_boxes.shape)}"
            )
        weights = torch.as_tensor(self.weights, dtype=gt_boxes.dtype, device=gt_boxes.device)
        wx, wy, ww, wh = weights[0], weights[1], weights[2], weights[3]

        ref_w = reference_boxes[:, 2:3] - reference_boxes[:, 0:1]
        ref_h = reference_boxes[:, 3:4] - reference_boxes[:, 1:2]
        ref_cx = reference_boxes[:, 0:1] + 0.5 * ref_w
        ref_cy = reference_boxes[:, 1:2] + 0.5 * ref_h

        gt_w = gt_boxes[:, 2:3] - gt_boxes[:, 0:1]
        gt_h = gt_boxes[:, 3:4] - gt_boxes[:, 1:2]
        gt_cx = gt_boxes[:, 0:1] + 0.5 * gt_w
        gt_cy = gt_boxes[:, 1:2] + 0.5 * gt_h

        dx = wx * (gt_cx - ref_cx) / ref_w
        dy = wy * (gt_cy - ref_cy) / ref_h
        dw = ww * torch.log(gt_w / ref_w)
        dh = wh * torch.log(gt_h / ref_h)
        return torch.cat((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, reference_boxes: Tensor) -> Tensor:
        """Boxes from ``deltas`` relative to ``reference_boxes`` (N, 4), in ``deltas``' dtype.

        ``deltas`` (N, 4) -> ``(N, 4)``; ``(N, 4 * K)`` with K > 1 or ``(N, K, 4)`` -> ``(N, K, 4)``.
        """
        if deltas.dim() == 3:
            if deltas.shape[-1] != 4:
                raise ValueError(f"3-D deltas must be (N, K, 4), got {tuple(deltas.shape)}")
            deltas = deltas.reshape(deltas.shape[0], -1)
            flat_out = False
        elif deltas.dim() == 2 and deltas.shape[1] % 4 == 0 and deltas.shape[1] > 0:
            flat_out = deltas.shape[1] == 4
        else:
            raise ValueError(f"deltas must be (N, 4 * K) or (N, K, 4), got {tuple(deltas.shape)}")
        if deltas.shape[0] != reference_boxes.shape[0]:
            raise ValueError(f"{deltas.shape[0]} rows of deltas for {reference_boxes.shape[0]} reference boxes")

        reference_boxes = reference_boxes.to(deltas.dtype)
        ref_w = reference_boxes[:, 2] - reference_boxes[:, 0]
        ref_h = reference_boxes[:, 3] - reference_boxes[:, 1]
        ref_cx = reference_boxes[:, 0] + 0.5 * ref_w
        ref_cy = reference_boxes[:, 1] + 0.5 * ref_h

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.clamp)

        cx = dx * ref_w[:, None] + ref_cx[:, None]
        cy = dy * ref_h[:, None] + ref_cy[:, None]
        w = torch.exp(dw) * ref_w[:, None]
        h = torch.exp(dh) * ref_h[:, None]
        half = torch.tensor(0.5, dtype=deltas.dtype, device=deltas.device)
        half_w = half * w
        half_h = half * h
        boxes = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=2)
        return boxes[:, 0] if flat_out else boxes
