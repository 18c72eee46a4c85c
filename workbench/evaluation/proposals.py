"""Proposal analyses of a two-stage detector: proposal recall of a trained run and the offsets
of its highest- and lowest-objectness proposals (KL-RPN paper, section 3.2 and Fig. 3).

Works for any detector of the workbench whose output carries the RPN's proposals
(``raw["proposals"]`` / ``raw["proposal_scores"]``, network-input pixels, mapped back to
original-image pixels here) and whose ``rpn`` has proposal ``settings``. The model runs in the
engine's prediction loop (:func:`workbench.engine.inference.iter_model_outputs`).

Offsets (paper Fig. 3): among the proposals of an image whose IoU with some (non-ignored) GT
box is above 0, take the ``factor x #GT`` highest-scored and the ``factor x #GT`` lowest-scored
(fewer when there are not enough: at most half of them each, so the two sets never share a
proposal) and measure each one's L1 offset to its highest-IoU GT box **in the box coder's
delta space with unit weights**: ``|dx| = |gx - px| / pw``, ``|dy| = |gy - py| / ph``
(centres, normalised by the proposal's size), ``|dw| = |log(gw / pw)|``, ``|dh| = |log(gh / ph)|``.
Shapes: ``(K, 4)`` arrays, columns x, y, w, h.

Proposal recall (:func:`run_proposal_recall`): class-agnostic ``AR@N``, ``R50@N``, ``R70@N``
(:func:`workbench.evaluation.recall.proposal_recall`) of the run's RPN with ``top_n`` proposals
per image.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from workbench.modeling.rpn import ProposalSettings
from workbench.modeling.transform import rescale_boxes
from workbench.ops import BoxCoder, box_iou

#: Proposals per GT box taken from each end of the ranking (paper Fig. 3: "#GT x 5").
DEFAULT_FACTOR = 5
COORDINATES = ("x", "y", "w", "h")


def offsets_by_objectness(
    proposals: Tensor,
    scores: Tensor,
    gt_boxes: Tensor,
    factor: int = DEFAULT_FACTOR,
    box_coder: BoxCoder | None = None,
) -> tuple[Tensor, Tensor]:
    """One image: proposals (P, 4) xyxy, scores (P,), GT (G, 4) in the same pixels ->
    ``(high, low)``, each ``(K, 4)`` absolute offsets (x, y, w, h) of the K highest- and
    K lowest-scored proposals with IoU > 0 to a GT, ``K = min(factor * G, n // 2)`` for the
    ``n`` such proposals (see the module docstring)."""
    coder = box_coder or BoxCoder()
    empty = proposals.new_zeros((0, 4))
    if proposals.shape[0] == 0 or gt_boxes.shape[0] == 0:
        return empty, empty
    iou = box_iou(proposals, gt_boxes.to(proposals.dtype))  # (P, G)
    best_iou, best_gt = iou.max(dim=1)
    overlapping = torch.where(best_iou > 0)[0]
    k = min(factor * int(gt_boxes.shape[0]), int(overlapping.numel()) // 2)
    if k == 0:
        return empty, empty
    order = overlapping[torch.argsort(scores[overlapping], descending=True, stable=True)]
    offsets = coder.encode(gt_boxes.to(proposals.dtype)[best_gt[order]], proposals[order]).abs()
    return offsets[:k], offsets[-k:]


@dataclass
class ObjectnessOffsets:
    """Offsets (K, 4) to the matched GT of the highest- (``high``) and lowest-objectness (``low``)
    proposals, pooled over ``num_images`` images."""

    high: np.ndarray
    low: np.ndarray
    num_images: int

    def summary(self) -> dict[str, float]:
        """Mean offset per coordinate and end: ``high_x``, ..., ``low_h`` (NaN when empty)."""
        out = {}
        for end, values in (("high", self.high), ("low", self.low)):
            means = values.mean(axis=0) if len(values) else np.full(4, np.nan)
            out.update({f"{end}_{c}": float(m) for c, m in zip(COORDINATES, means)})
        return out


def objectness_offsets(
    proposals_per_image: Mapping[int, tuple[Tensor, Tensor]],
    gt_per_image: Mapping[int, Tensor],
    factor: int = DEFAULT_FACTOR,
    box_coder: BoxCoder | None = None,
) -> ObjectnessOffsets:
    """:func:`offsets_by_objectness` over images: image id -> ``(boxes (P, 4), scores (P,))`` and
    image id -> GT boxes (G, 4), in the same pixels."""
    high, low = [], []
    for image_id, (boxes, scores) in proposals_per_image.items():
        h, l = offsets_by_objectness(boxes, scores, gt_per_image[image_id], factor, box_coder)
        high.append(h)
        low.append(l)
    return ObjectnessOffsets(_to_array(high), _to_array(low), len(proposals_per_image))


def _to_array(parts: Sequence[Tensor]) -> np.ndarray:
    return torch.cat(list(parts)).double().numpy() if parts else np.zeros((0, 4))


def dataset_gt_boxes(dataset, indices: Sequence[int] | None = None) -> dict[int, Tensor]:
    """Image id -> non-ignored GT boxes (G, 4) xyxy float32 in original pixels, read from the
    dataset's records (no image is loaded)."""
    records = dataset.records if indices is None else [dataset.records[i] for i in indices]
    return {
        rec.image_id: torch.as_tensor(rec.boxes[~rec.ignore.astype(bool)], dtype=torch.float32).reshape(-1, 4)
        for rec in records
    }


@contextlib.contextmanager
def proposal_settings(model: nn.Module, settings: ProposalSettings | None) -> Iterator[None]:
    """Temporarily replace the RPN's proposal settings (``None``: leave them)."""
    if settings is None:
        yield
        return
    previous = model.rpn.settings
    model.rpn.settings = settings
    try:
        yield
    finally:
        model.rpn.settings = previous


def settings_with_top_n(model: nn.Module, top_n: int) -> ProposalSettings:
    """The model's RPN settings with ``top_n`` boxes per level before NMS and per image after,
    at test time (e.g. 1000 for AR@1000)."""
    return dataclasses.replace(model.rpn.settings, pre_nms_top_n_test=top_n, post_nms_top_n_test=top_n)


@torch.no_grad()
def rpn_proposals(
    model: nn.Module,
    dataset,
    *,
    indices: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
    settings: ProposalSettings | None = None,
) -> dict[int, tuple[Tensor, Tensor]]:
    """Image id -> ``(boxes (P, 4), scores (P,))`` of the RPN in evaluation mode, boxes in
    original-image pixels, sorted by decreasing score, on the CPU. ``settings`` replaces the
    RPN's proposal settings for this call (see :func:`settings_with_top_n`)."""
    from workbench.engine.inference import iter_model_outputs

    out: dict[int, tuple[Tensor, Tensor]] = {}
    with proposal_settings(model, settings):
        for item in iter_model_outputs(model, dataset, device, indices=indices, batch_size=batch_size,
                                       desc="proposals"):
            raw = item.output.raw
            for i, image_id in enumerate(item.batch.image_ids):
                boxes = rescale_boxes(raw["proposals"][i], raw["image_sizes"][i], raw["original_sizes"][i])
                out[int(image_id)] = (boxes.cpu(), raw["proposal_scores"][i].cpu())
    return out


def run_objectness_offsets(
    run_dir: Path | str,
    *,
    which: str = "last",
    data: str | None = None,
    split: str | None = None,
    max_images: int | None = 100,
    factor: int = DEFAULT_FACTOR,
    device: str = "cpu",
) -> ObjectnessOffsets:
    """:class:`ObjectnessOffsets` of a trained run on the first ``max_images`` images of
    ``split`` (default the run's validation split; the paper used 100 COCO minival images)."""
    from workbench.engine.loading import open_trained_run

    run = open_trained_run(run_dir, which, data=data, split=split, device=device)
    model, cfg, dataset = run.model, run.cfg, run.dataset
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    indices = list(range(n))
    proposals = rpn_proposals(model, dataset, indices=indices, device=run.device, batch_size=cfg.batch_size)
    return objectness_offsets(proposals, dataset_gt_boxes(dataset, indices), factor)


def run_proposal_recall(
    run_dir: Path | str, *, max_images: int | None = 100, top_n: int = 1000, which: str = "best",
    data: str | None = None, split: str | None = None, device: str = "cpu",
) -> dict[str, float]:
    """Class-agnostic proposal recall (``AR@N``, ``R50@N``, ``R70@N`` for N = 100, 300, 1000) of
    the run's RPN with ``top_n`` proposals per image, on the first ``max_images`` images of
    ``split`` (default the run's validation split)."""
    from workbench.engine.inference import dataset_coco_gt
    from workbench.engine.loading import open_trained_run
    from workbench.evaluation.recall import proposal_recall

    run = open_trained_run(run_dir, which, data=data, split=split, device=device)
    n = len(run.dataset) if max_images is None else min(max_images, len(run.dataset))
    proposals = rpn_proposals(run.model, run.dataset, indices=list(range(n)), device=run.device,
                              batch_size=run.cfg.batch_size, settings=settings_with_top_n(run.model, top_n))
    return proposal_recall(dataset_coco_gt(run.dataset, list(proposals)), proposals)


__all__ = [
    "COORDINATES", "DEFAULT_FACTOR", "ObjectnessOffsets", "dataset_gt_boxes", "objectness_offsets",
    "offsets_by_objectness", "proposal_settings", "rpn_proposals", "run_objectness_offsets", "run_proposal_recall",
    "settings_with_top_n",
]
