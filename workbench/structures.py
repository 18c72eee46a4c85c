"""Data structures that cross module boundaries: detections and the detector output.

Conventions used across the workbench:
- boxes are absolute ``xyxy`` float tensors in pixels; ``(N, 4)``;
- labels are contiguous ``int64`` in ``1..C``; ``0`` is background;
- ``*_per_image`` names a list with one entry per image of a batch;
- loss keys read ``loss_<stage>_<kind>`` (``loss_rpn_cls``, ``loss_rcnn_box`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Detections:
    """Final detections of one image, in that image's original coordinates.

    ``extras`` holds per-box method extras aligned with ``boxes`` (e.g. KL-RPN ``sigma`` (N, 4),
    IoU-uniform ``iou_pred`` (N,)).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device: torch.device | str) -> "Detections":
        return Detections(
            self.boxes.to(device),
            self.scores.to(device),
            self.labels.to(device),
            {k: v.to(device) for k, v in self.extras.items()},
        )

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> "Detections":
        return cls(
            torch.zeros((0, 4), device=device),
            torch.zeros((0,), device=device),
            torch.zeros((0,), dtype=torch.int64, device=device),
        )


@dataclass
class DetectorOutput:
    """What every detector returns, in training and in evaluation mode alike.

    - ``raw``: raw head outputs (method-specific names), for inspection;
    - ``losses``: ``loss_<stage>_<kind>`` -> scalar, filled when targets are given;
    - ``detections``: one ``Detections`` per image, filled in evaluation mode.
    """

    raw: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    detections: list[Detections] = field(default_factory=list)

    def total_loss(self) -> Tensor:
        if not self.losses:
            raise ValueError("no losses: the model was called without targets")
        return sum(self.losses.values())  # type: ignore[return-value]
