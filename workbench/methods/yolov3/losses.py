"""YOLOv3's loss, per anchor and then reduced (darknet's ``forward_yolo_layer``).

Per anchor (shapes (N, A)):

- ``obj``: the objectness loss of every positive (target 1) and negative (target 0) anchor,
  zero for ignored ones; binary cross-entropy by default (darknet's ``delta = t - sigmoid``),
  or the focal / anchor loss of the paper's comparison rows (``objectness_loss``);
- ``cls``: binary cross-entropy of the positives' ``K`` class logits against the one-hot GT
  class, summed over the classes (YOLOv3 section 2.2: independent logistic classifiers);
- ``box``: the coordinate loss of the positives, darknet's: squared error of ``sigmoid(tx)``,
  ``sigmoid(ty)`` against the in-cell offsets of the GT centre and of ``tw``, ``th`` against
  ``log(g / p)``, halved (``0.5 sum (pred - target)^2``, whose gradient is darknet's delta) and
  weighted by ``2 - w h`` with ``w``, ``h`` the GT size as a fraction of the network input
  (``box_scale_size``): small boxes count up to twice as much.

Reduction: summed over the anchors of an image and averaged over the images (darknet sums over
the batch; the average keeps the scale independent of the batch size), then weighted:
``loss_yolo_obj``, ``loss_yolo_cls``, ``loss_yolo_box``. A method that rescales anchors passes
per-anchor weights to :meth:`YOLOLoss.reduce`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.losses import binary_cross_entropy_with_logits
from workbench.modeling.assignment import Assignment

STAGE = "yolo"


@dataclass
class YOLOTargets:
    """Training targets of a batch: ``labels`` (N, A) (``c > 0`` / 0 / -1), ``box_targets``
    (N, A, 4) (zeros where not positive), ``box_scale`` (N, A) the ``2 - w h`` weight (zeros
    where not positive), ``positive`` / ``negative`` (N, A) bool, the per-image assignments."""

    labels: Tensor
    box_targets: Tensor
    box_scale: Tensor
    positive: Tensor
    negative: Tensor
    assignments: list[Assignment] = field(default_factory=list)


ObjectnessLoss = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class YOLOLoss:
    """The per-anchor terms and their reduction (module docstring). ``objectness_loss``:
    element-wise ``(logits, target) -> loss``."""

    objectness_loss: ObjectnessLoss = binary_cross_entropy_with_logits
    obj_weight: float = 1.0
    cls_weight: float = 1.0
    box_weight: float = 1.0
    stage: str = STAGE

    def per_anchor(self, preds: Mapping[str, Tensor], targets: YOLOTargets) -> dict[str, Tensor]:
        """``obj``, ``cls``, ``box`` losses of every anchor (N, A) (zeros where not used)."""
        positive, negative = targets.positive, targets.negative
        obj_logits = preds["obj_logits"][..., 0]
        obj = self.objectness_loss(obj_logits, positive.to(obj_logits.dtype))
        obj = torch.where(positive | negative, obj, torch.zeros_like(obj))
        image, anchor = torch.where(positive)
        cls = torch.zeros_like(obj)
        box = torch.zeros_like(obj)
        if image.numel() > 0:
            logits = preds["cls_logits"][image, anchor]
            onehot = F.one_hot(targets.labels[image, anchor] - 1, logits.shape[-1]).to(logits.dtype)
            cls = cls.index_put((image, anchor), binary_cross_entropy_with_logits(logits, onehot).sum(dim=-1))
            deltas = preds["deltas"][image, anchor]
            predicted = torch.cat([torch.sigmoid(deltas[:, :2]), deltas[:, 2:]], dim=-1)
            squared = (predicted - targets.box_targets[image, anchor]).pow(2).sum(dim=-1)
            box = box.index_put((image, anchor), 0.5 * targets.box_scale[image, anchor] * squared)
        return {"obj": obj, "cls": cls, "box": box}

    def reduce(self, per_anchor: Mapping[str, Tensor], weights: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Sum over anchors, mean over images, times the term's weight; ``weights`` (optional,
        by term, (N, A)) multiply the per-anchor losses first."""
        scale = {"obj": self.obj_weight, "cls": self.cls_weight, "box": self.box_weight}
        out = {}
        for name, loss in per_anchor.items():
            if weights is not None and name in weights:
                loss = loss * weights[name]
            out[f"loss_{self.stage}_{name}"] = loss.sum(dim=1).mean() * scale[name]
        return out

    def __call__(self, preds: Mapping[str, Tensor], targets: YOLOTargets) -> dict[str, Tensor]:
        return self.reduce(self.per_anchor(preds, targets))


__all__ = ["STAGE", "YOLOLoss", "YOLOTargets"]
