"""Libra R-CNN's own figures of a run (:class:`workbench.methods.RunFigure`):

- the balanced L1 loss of the run's settings beside smooth L1, loss and gradient against the
  error (the paper's Fig. 5, from the run's config alone);
- the IoU with the ground truth of the box stage's negatives: all of them, those a random
  sampler picks and those the IoU-balanced sampler picks (the paper's Fig. 3, hard negatives):
  from the sampling the run recorded while training when it did (``trace_sampling_every``),
  else from the run's checkpoint on its first validation images.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from workbench.methods import RunFigure

#: At most this many validation images go through the checkpoint, in one batch (the proposals
#: of a whole batch are drawn at once: at COCO sizes more would not fit a GPU's memory).
MODEL_IMAGES = 8


def balanced_l1_figures(run_dir: Path | str, *, max_images: int = 0, device: str = "cpu") -> list[go.Figure]:
    """Balanced L1 at the run's ``(alpha, gamma, beta)`` and smooth L1 with the same knee
    (:func:`workbench.viz.losses.loss_gradient_figure`); ``max_images`` is unused."""
    from workbench.methods.libra.analysis import balanced_l1_settings, error_grid, loss_curves
    from workbench.viz.losses import loss_gradient_figure

    settings, knee = balanced_l1_settings(str(run_dir))
    x = error_grid(3.0)
    return [loss_gradient_figure(x, loss_curves(x, settings=settings, beta=knee, smooth_l1_beta=knee), knee=knee,
                                 title=f"balanced L1 and smooth L1 against |x| (knee at {knee:g})")]


def negative_iou_figures(run_dir: Path | str, *, max_images: int, device: str = "cpu") -> list[go.Figure]:
    """The negatives' IoU (:func:`workbench.viz.sampling.negative_iou_figure`) from the run's
    recorded training sampling, else from its checkpoint's proposals on its first ``max_images``
    (at most :data:`MODEL_IMAGES`) validation images with the training proposal settings; none
    for a model without a box stage."""
    from workbench.methods.libra.analysis import (
        box_stage_sampling,
        figure_inputs,
        model_proposals,
        negative_ious,
        recorded_negative_ious,
    )
    from workbench.viz.sampling import negative_iou_figure

    recorded = recorded_negative_ious(run_dir)
    if recorded is not None:
        return [negative_iou_figure(recorded, title="IoU of the box stage's negatives, as sampled in training")]
    inputs = figure_inputs(str(run_dir), num_images=min(max_images, MODEL_IMAGES), device=device)
    if not inputs.two_stage:
        return []
    proposals, targets = model_proposals(inputs.model, inputs.images, inputs.targets, training_settings=True)
    ious = negative_ious(proposals, targets, **box_stage_sampling(inputs.model))
    return [negative_iou_figure(ious, title=f"IoU of the box stage's negatives: {inputs.source}, "
                                            f"{len(inputs.images)} validation images")]


BALANCED_L1_FIGURE = RunFigure("balanced L1 against smooth L1: loss and gradient (paper Fig. 5)", balanced_l1_figures,
                               needs="config")
NEGATIVE_IOU_FIGURE = RunFigure("IoU of the box stage's negatives by sampler: hard negatives (paper Fig. 3)",
                                negative_iou_figures, needs="checkpoint")

__all__ = ["BALANCED_L1_FIGURE", "MODEL_IMAGES", "NEGATIVE_IOU_FIGURE", "balanced_l1_figures", "negative_iou_figures"]
