"""IoU-uniform R-CNN's own figures of a run (:class:`workbench.methods.RunFigure`), from its saved
traces: the IoU its head predicts for each detection against the detection's true IoU (the
paper's Fig. 8), once from the proposal's features and once from the re-pooled refined box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch

from workbench import records as R
from workbench.methods import RunFigure
from workbench.methods.iou_uniform.analysis import detection_ious
from workbench.methods.iou_uniform.model import IOU_PRED, IOU_PRED_FIRST


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def predicted_and_true_ious(images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(true, {name: predicted})`` over the detections of ``images``
    (:class:`~workbench.viz.explorer.ExplorerImage`): each detection's best IoU with a ground
    truth of its class and its two predicted IoUs; images whose detections lack them are left out."""
    true, first, refined = [], [], []
    for item in images:
        det = item.records.get(R.DETECTIONS, {})
        if IOU_PRED not in det or IOU_PRED_FIRST not in det:
            continue
        gt_boxes, gt_labels = torch.as_tensor(item.gt["boxes"]).float(), torch.as_tensor(item.gt["labels"])
        true.append(detection_ious(det[R.BOXES].float(), det[R.LABELS], gt_boxes, gt_labels).numpy())
        first.append(det[IOU_PRED_FIRST].float().numpy())
        refined.append(det[IOU_PRED].float().numpy())
    return _concat(true), {"first prediction (proposal features)": _concat(first),
                           "after re-pooling the refined box": _concat(refined)}


def iou_correlation_figures(run_dir: Path | str, *, max_images: int, device: str = "cpu") -> list[go.Figure]:
    """Predicted against true IoU of the detections of the first ``max_images`` traced images
    (:func:`workbench.viz.iou.iou_correlation_figure`); none without detections."""
    from workbench.pipelines.runs import pooled_trace_figure
    from workbench.viz.iou import iou_correlation_figure

    return pooled_trace_figure(
        run_dir, max_images, lambda _, images: predicted_and_true_ious(images),
        lambda true, predicted, n: iou_correlation_figure(
            true, predicted, title=f"Predicted against true IoU of the detections ({n} images)"))


RUN_FIGURES = (
    RunFigure("predicted against true IoU of the detections (paper Fig. 8)", iou_correlation_figures,
              needs="traces"),
)

__all__ = ["RUN_FIGURES", "iou_correlation_figures", "predicted_and_true_ious"]
