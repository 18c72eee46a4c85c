"""Small synthetic trace records (the shapes of ``workbench.modeling.trace``) for figure tests."""

from __future__ import annotations

import torch

from workbench.methods import TWO_STAGE_VIEWS, RecordView
from workbench.ops import nms_with_ledger
from workbench.viz.nms import kept_detections


#: The two-stage views plus a heatmap of the synthetic map and a per-proposal attribute.
MAP_VIEWS = (
    *TWO_STAGE_VIEWS,
    RecordView("uncertainty_map", "heatmap", field="spread", value="sigma_mean", label="mean spread", shown=True),
    RecordView("rpn_proposals", "attribute", field="sigma", label="spread per coordinate"),
)


def clustered_boxes(generator: torch.Generator, count: int, size: int) -> torch.Tensor:
    """``count`` boxes around a few centres, so NMS has overlaps to decide."""
    centres = torch.rand((4, 2), generator=generator) * size * 0.6 + size * 0.2
    pick = torch.randint(0, 4, (count,), generator=generator)
    jitter = (torch.rand((count, 2), generator=generator) - 0.5) * size * 0.1
    half = torch.rand((count, 2), generator=generator) * size * 0.1 + size * 0.05
    centre = centres[pick] + jitter
    return torch.cat([centre - half, centre + half], dim=1).clamp(0, size)


def nms_record(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, threshold: float) -> dict:
    ledger = nms_with_ledger(boxes, scores, threshold, idxs)
    return {"boxes": boxes, "scores": scores, "idxs": idxs, **ledger.to_dict()}


def make_records(seed: int = 0, size: int = 64, candidates: int = 40, proposals: int = 30) -> dict:
    """One image's records: ``rpn_proposals_pre_nms``, ``rpn_nms``, ``rpn_proposals`` (with
    ``sigma``), ``rcnn_nms``, ``detections`` and an ``uncertainty_map`` (``sigma_mean`` on 4 x 4
    pixel cells; :data:`MAP_VIEWS` shows it)."""
    g = torch.Generator().manual_seed(seed)
    pre_boxes = clustered_boxes(g, proposals * 2, size)
    pre_scores = torch.rand(proposals * 2, generator=g) * 10 - 5
    levels = torch.randint(0, 2, (proposals * 2,), generator=g)
    rpn_nms = nms_record(pre_boxes, pre_scores, levels, 0.7)
    keep = rpn_nms["keep"][:proposals]
    boxes = clustered_boxes(g, candidates, size)
    scores = torch.rand(candidates, generator=g)
    labels = torch.randint(1, 4, (candidates,), generator=g)
    rcnn_nms = nms_record(boxes, scores, labels, 0.5)
    return {
        "rpn_proposals_pre_nms": {"boxes": pre_boxes, "scores": pre_scores, "levels": levels},
        "rpn_nms": rpn_nms,
        "rpn_proposals": {"boxes": pre_boxes[keep], "scores": pre_scores[keep],
                          "sigma": torch.rand((len(keep), 4), generator=g)},
        "rcnn_candidates": {"boxes": boxes, "scores": scores, "labels": labels},
        "rcnn_nms": rcnn_nms,
        "detections": kept_detections(rcnn_nms),
        # a map on cells of 4 x 4 pixels, as a method's map record stores it
        "uncertainty_map": {"sigma_mean": torch.rand((size // 4, size // 4), generator=g),
                            "cell_size": torch.tensor([4.0, 4.0])},
    }


def make_image(seed: int = 0, size: int = 64) -> torch.Tensor:
    """A ``(3, size, size)`` uint8 image."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)


def make_gt(seed: int = 0, size: int = 64, count: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed + 1000)
    return {"boxes": clustered_boxes(g, count, size), "labels": torch.randint(1, 4, (count,), generator=g)}
