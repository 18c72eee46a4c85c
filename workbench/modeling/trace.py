"""Inspection of a forward pass: a recorder the detector fills per image, and the NMS it uses.

Conventions:
- a :class:`TraceRecorder` is passed to ``forward(..., recorder=...)``; without one nothing is
  recorded and NMS is plain ``torchvision.ops.batched_nms`` (no extra cost);
- with one, every NMS runs through ``workbench.ops.nms_with_ledger``, whose ``keep`` is identical
  to ``batched_nms``, so detections are the same either way;
- ``recorder.images[i]`` maps a record name to a dict of tensors for image ``i``. A field named
  ``boxes`` holds absolute ``xyxy`` boxes; while the forward runs they are in network-input
  coordinates, and the detector maps them to original-image coordinates before it returns
  (:meth:`TraceRecorder.rescale_boxes`). Tensors are detached. The boxes of the records in
  :data:`NETWORK_BOX_RECORDS` (the anchors: the same for every image of one network-input size)
  keep their network-input version too, as ``network_boxes`` with ``box_scale``
  ``(scale_x, scale_y)`` (float64), so that a saved trace stores them once per input size
  (:mod:`workbench.inspection.traces`) and not once per image.

Record names written by the two-stage baseline: ``anchors``; ``rpn_proposals_pre_nms``
(``boxes``, ``scores``, ``levels``: after top-k, clipping and removal of small boxes);
``rpn_nms`` (ledger, see below); ``rpn_proposals`` (``boxes``, ``scores``);
``rcnn_candidates`` (``boxes``, ``scores``, ``labels``: per-class boxes above the score
threshold); ``rcnn_nms``; ``detections`` (``boxes``, ``scores``, ``labels``). An RPN built with
``proposal_fields`` adds those per-proposal fields to ``rpn_proposals_pre_nms`` and
``rpn_proposals`` (KL-RPN: ``sigma`` (P, 4)), in float16 (:func:`shown_fields`).

An NMS record holds the input ``boxes``, ``scores`` and group ``idxs`` (level or class) and the
ledger (``workbench.ops.NmsLedger.to_dict``): ``keep`` (indices, in keep order),
``suppressed_by`` (N,) index of the suppressing box or -1, ``suppressor_iou`` (N,) (NaN for kept
boxes) and ``iou_threshold`` (0-d tensor).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from workbench import records as R
from workbench.ops import nms_with_ledger, scale_boxes

#: Field of a box record: its ``boxes`` in network-input pixels, before :meth:`TraceRecorder.rescale_boxes`.
NETWORK_BOXES = "network_boxes"
#: Field of a box record with :data:`NETWORK_BOXES`: ``(scale_x, scale_y)`` (float64, 2), the
#: factors that gave ``boxes``: ``boxes == scale_boxes(network_boxes, scale_x, scale_y)``.
BOX_SCALE = "box_scale"
#: The records whose boxes do not depend on the image's content, only on its network-input size.
NETWORK_BOX_RECORDS = frozenset({R.ANCHORS})


def shown_fields(fields: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-box fields a method adds to a box record (KL-RPN's ``sigma`` of the proposals) as a
    trace keeps them: floating-point ones in float16, others unchanged. They are shown as
    attributes and read by no replay (NMS replay reads ``boxes``, ``scores`` and the ledger,
    which stay exact); float16 keeps three significant digits and halves what they cost."""
    return {k: v.half() if v.is_floating_point() else v for k, v in fields.items()}


class TraceRecorder:
    """Collects per-image records during one forward pass (see the module docstring)."""

    def __init__(self) -> None:
        self.images: list[dict[str, dict[str, Tensor]]] = []

    def start(self, num_images: int) -> None:
        """Reset for a batch of ``num_images`` images."""
        self.images = [{} for _ in range(num_images)]

    def put(self, image_index: int, name: str, **fields: Tensor) -> None:
        """Record ``fields`` (tensors, detached) under ``name`` for one image."""
        self.images[image_index][name] = {k: v.detach() for k, v in fields.items()}

    def nms(
        self,
        image_index: int,
        name: str,
        boxes: Tensor,
        scores: Tensor,
        idxs: Tensor,
        iou_threshold: float,
    ) -> Tensor:
        """Run grouped NMS with a ledger, record it under ``name`` and return ``keep``."""
        ledger = nms_with_ledger(boxes, scores, iou_threshold, idxs)
        self.put(image_index, name, boxes=boxes, scores=scores, idxs=idxs, **ledger.to_dict())
        return ledger.keep

    def rescale_boxes(self, image_index: int, scale_x: float, scale_y: float) -> None:
        """Multiply every recorded ``boxes`` field of one image by the given factors; the records
        of :data:`NETWORK_BOX_RECORDS` keep the boxes as they were and the factors (see the module
        docstring)."""
        for name, fields in self.images[image_index].items():
            if "boxes" not in fields:
                continue
            if name in NETWORK_BOX_RECORDS:
                fields[NETWORK_BOXES] = fields["boxes"]
                fields[BOX_SCALE] = torch.tensor([scale_x, scale_y], dtype=torch.float64)
            fields["boxes"] = scale_boxes(fields["boxes"], scale_x, scale_y)

    def as_dict(self) -> list[dict[str, dict[str, Any]]]:
        """The records, one dict per image."""
        return self.images


def grouped_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float,
    recorder: TraceRecorder | None = None,
    image_index: int = 0,
    name: str = "nms",
) -> Tensor:
    """NMS within groups ``idxs``: boxes (N, 4), scores (N,), idxs (N,) -> keep (K,) int64.

    Sorted by decreasing score, identical to ``torchvision.ops.batched_nms``; with a recorder the
    ledger is recorded under ``name``.
    """
    if recorder is None:
        return batched_nms(boxes, scores, idxs, iou_threshold)
    return recorder.nms(image_index, name, boxes, scores, idxs, iou_threshold)
