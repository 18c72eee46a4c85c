"""What IoU-uniform R-CNN's figures need (:mod:`workbench.viz.iou`), gathered from a detector
run over a dataset.

- the best IoU of the RPN's proposals with the GT, and the IoU of the samples the model's own
  box source generates for the same GT (Fig. 1 (a) / Fig. 6);
- for every RoI whose proposal overlaps a GT at IoU >= ``low``: its IoU before and after the box
  head's refinement, with the same GT (Fig. 3), from the raw outputs (:func:`refined_rois`; a
  baseline's too, for the comparison);
- for every detection: its true IoU (best with a GT of its class) and its two predicted IoUs
  (Fig. 8), and the detections and GT per image (recall curves, Fig. 7), with NMS by
  class x IoU or, within :func:`nms_by_class_score`, by the class score alone.

Boxes are in original-image pixels throughout.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from workbench.methods.iou_uniform.model import IOU_PRED, IOU_PRED_FIRST
from workbench.modeling.box_stages import BOX_REGRESSION, CLASS_LOGITS
from workbench.modeling.transform import rescale_boxes
from workbench.ops import box_iou, pairwise_iou


def roi_ious(proposals: Tensor, refined: Tensor, gt_boxes: Tensor, low: float = 0.5) -> tuple[Tensor, Tensor]:
    """RoIs (R, 4) before and after refinement (R, 4), GT (G, 4) -> ``(input IoU, output IoU)``
    of the RoIs whose proposal overlaps a GT at IoU >= ``low``, both with that proposal's best GT."""
    if gt_boxes.shape[0] == 0 or proposals.shape[0] == 0:
        empty = proposals.new_zeros((0,))
        return empty, empty.clone()
    best, matched = box_iou(gt_boxes.to(proposals.dtype), proposals).nan_to_num(0.0).max(dim=0)
    keep = best >= low
    output = pairwise_iou(refined[keep], gt_boxes.to(proposals.dtype)[matched[keep]]).nan_to_num(0.0)
    return best[keep], output


def detection_ious(boxes: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Tensor:
    """Best IoU of each detection (N, 4) with a GT of its class (0 when there is none) -> (N,)."""
    if gt_boxes.shape[0] == 0 or boxes.shape[0] == 0:
        return boxes.new_zeros((boxes.shape[0],))
    iou = box_iou(gt_boxes.to(boxes.dtype), boxes).nan_to_num(0.0)
    iou[gt_labels.view(-1, 1) != labels.view(1, -1)] = 0.0
    return iou.max(dim=0).values


@contextlib.contextmanager
def nms_by_class_score(model: nn.Module) -> Iterator[None]:
    """Within the block, the detector's post-processing scores (and suppresses) by the class
    probability alone (``use_iou=False``); restored after."""
    heads = model.roi_heads
    previous = heads.postprocess
    heads.postprocess = dataclasses.replace(previous, use_iou=False)
    try:
        yield
    finally:
        heads.postprocess = previous


@dataclass
class IoUAnalysis:
    """Flat arrays over the images (see the module docstring) and, per image, the detections and
    GT as ``(boxes, labels)`` (for :func:`workbench.viz.iou.recall_at_ious`)."""

    rpn_iou: np.ndarray
    generated_iou: np.ndarray
    roi_input_iou: np.ndarray
    roi_output_iou: np.ndarray
    det_true_iou: np.ndarray
    det_iou_pred: np.ndarray
    det_iou_pred_first: np.ndarray
    detections: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    ground_truth: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _numpy(parts: Sequence[Tensor]) -> np.ndarray:
    return torch.cat([p.detach().double().cpu().reshape(-1) for p in parts]).numpy() if parts else np.zeros(0)


def _box_source(model: nn.Module):
    sources = [s.box_source for s in model.roi_heads.stages if s.box_source is not None]
    return sources[0] if sources else None


def refined_rois(model: nn.Module, raw: dict) -> list[Tensor]:
    """The proposals of each image refined by the pass whose boxes the detections take (the
    post-processing's ``box_pass``, else the last inference pass), in network-input pixels, row
    ``r`` from proposal ``r``: class-agnostic offsets, or those of each RoI's best foreground
    class (:meth:`workbench.modeling.BoxStage.refine`). Works for any detector built from box
    stages (the baselines included)."""
    passes = raw["box_stages"]
    stages = [s for s in model.roi_heads.stages if s.in_inference]
    k = getattr(model.roi_heads.postprocess, "box_pass", len(passes) - 1)
    outputs = {key: passes[k][key] for key in (CLASS_LOGITS, BOX_REGRESSION) if key in passes[k]}
    return stages[k].refine(outputs, passes[k]["rois"], raw["image_sizes"])


@torch.no_grad()
def collect_iou_analysis(
    model: nn.Module,
    dataset,
    *,
    indices: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
    low: float = 0.5,
    seed: int = 0,
) -> IoUAnalysis:
    """Run ``model`` over ``dataset[i]`` (``indices``, default all) and gather the arrays of
    :class:`IoUAnalysis` from its raw outputs and detections (any two-stage detector built from
    box stages; the predicted IoUs are empty for a detector without them). Generated samples
    come from the first box stage with a box source (none: ``generated_iou`` is empty), drawn
    with a generator seeded by ``seed``, on the GT in original pixels (their IoUs do not depend
    on the image scale)."""
    from workbench.engine.inference import iter_model_outputs, unwrap

    net = unwrap(model)
    indices = list(range(len(dataset))) if indices is None else list(indices)
    gt = {dataset.records[i].image_id: dataset.records[i] for i in indices}
    source = _box_source(net)
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {k: [] for k in ("rpn", "gen", "roi_in", "roi_out", "true", "pred", "first")}
    analysis_dets, analysis_gt = [], []
    for item in iter_model_outputs(model, dataset, device, indices=indices, batch_size=batch_size,
                                   desc="IoU analysis"):
        raw = item.output.raw
        refined = refined_rois(net, raw)
        for i, image_id in enumerate(item.batch.image_ids):
            rec = gt[int(image_id)]
            keep = ~rec.ignore.astype(bool)
            gt_boxes = torch.as_tensor(rec.boxes[keep], dtype=torch.float32).reshape(-1, 4)
            gt_labels = torch.as_tensor(rec.labels[keep], dtype=torch.int64)
            size, original = raw["image_sizes"][i], raw["original_sizes"][i]
            proposals = rescale_boxes(raw["proposals"][i], size, original).cpu()
            if gt_boxes.shape[0]:
                parts["rpn"].append(box_iou(gt_boxes, proposals).nan_to_num(0.0).max(dim=0).values)
            if source is not None:
                target = {"boxes": gt_boxes, "labels": gt_labels}
                samples = source([proposals], [target], generator, [(rec.height, rec.width)])[0]
                if samples.shape[0]:
                    parts["gen"].append(box_iou(gt_boxes, samples).max(dim=0).values)
            before, after = roi_ious(proposals, rescale_boxes(refined[i], size, original).cpu(), gt_boxes, low)
            parts["roi_in"].append(before)
            parts["roi_out"].append(after)
            det = item.output.detections[i].to("cpu")
            parts["true"].append(detection_ious(det.boxes, det.labels, gt_boxes, gt_labels))
            for key, name in (("pred", IOU_PRED), ("first", IOU_PRED_FIRST)):
                if name in det.extras:
                    parts[key].append(det.extras[name])
            analysis_dets.append((det.boxes.numpy(), det.labels.numpy()))
            analysis_gt.append((gt_boxes.numpy(), gt_labels.numpy()))
    return IoUAnalysis(
        _numpy(parts["rpn"]), _numpy(parts["gen"]), _numpy(parts["roi_in"]), _numpy(parts["roi_out"]),
        _numpy(parts["true"]), _numpy(parts["pred"]), _numpy(parts["first"]), analysis_dets, analysis_gt,
    )


@dataclass
class AnalysisInputs:
    """The model, dataset and images the figures are computed on, and what they are, in words."""

    model: nn.Module
    dataset: object
    indices: list[int]
    source: str


def analysis_inputs(
    run_dir: str | None = None, *, method: str = "iou_uniform", num_images: int = 4, **options: Any
) -> AnalysisInputs:
    """The first ``num_images`` images and the model of
    :func:`workbench.engine.loading.figure_model` (``options``: its ``data``, ``split``,
    ``min_size``, ``seed``, ``device`` and ``which``): with ``run_dir`` the run's checkpoint on
    its split, without it a freshly built ``method`` whose untrained heads give meaningless
    IoUs, but every figure can be drawn before a run exists."""
    from workbench.engine.loading import figure_model

    opened = figure_model(run_dir, method=method, **options)
    count = min(num_images, len(opened.dataset))
    return AnalysisInputs(opened.model, opened.dataset, list(range(count)), opened.source)


def runs_metrics(runs: dict[str, list[str]] | None) -> dict[str, list[dict]]:
    """Name -> the final metrics (best checkpoint's evaluation, else the last) of each run
    folder (e.g. one per seed), for :func:`workbench.viz.iou.ap_per_iou_figure`."""
    from workbench.pipelines.runs import load_run

    return {name: [load_run(d).final for d in dirs] for name, dirs in (runs or {}).items()}


__all__ = ["AnalysisInputs", "IoUAnalysis", "analysis_inputs", "collect_iou_analysis", "detection_ious",
           "nms_by_class_score", "refined_rois", "roi_ious", "runs_metrics"]
