"""RefineDet's own figures of a run (:class:`workbench.methods.RunFigure`), from its saved traces:
the most object-like anchors before and after the anchor refinement module (paper section 3.1),
and the IoU of the matched anchors with their ground truth before and after refinement."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from workbench import records as R
from workbench.methods import RunFigure

#: Anchors drawn per image, the most object-like first.
SHOWN_ANCHORS = 30


def anchor_refinement_figures(run_dir: Path | str, *, max_images: int, device: str = "cpu") -> list[go.Figure]:
    """Per traced image (the first ``max_images``): its :data:`SHOWN_ANCHORS` most object-like
    anchors and their refined boxes (:func:`workbench.viz.anchor_refinement.anchor_refinement_figure`)."""
    from workbench.methods.refinedet.analysis import most_object_like
    from workbench.pipelines.runs import figures_per_traced_image
    from workbench.viz.anchor_refinement import anchor_refinement_figure

    def draw(item):
        top = most_object_like(item.records, k=SHOWN_ANCHORS)
        return anchor_refinement_figure(
            top["anchors"], top["refined"], top["objectness"], image=item.image, gt_boxes=item.gt["boxes"],
            title=f"the {SHOWN_ANCHORS} most object-like anchors before (dashed) and after (solid) refinement: "
                  f"{item.label}")

    return figures_per_traced_image(run_dir, max_images, R.REFINED_ANCHORS, draw)


def anchor_iou_shift_figures(run_dir: Path | str, *, max_images: int, device: str = "cpu") -> list[go.Figure]:
    """The IoU of the matched anchors with their ground truth before and after refinement over
    the first ``max_images`` traced images (:func:`workbench.viz.anchor_refinement.anchor_iou_shift_figure`)."""
    from workbench.methods.refinedet.analysis import gt_boxes_by_image, split_ious
    from workbench.pipelines.runs import pooled_trace_figure
    from workbench.viz.anchor_refinement import anchor_iou_shift_figure

    def values(dataset, images):
        return split_ious([i for i in images if R.REFINED_ANCHORS in i.records], gt_boxes_by_image(dataset))

    return pooled_trace_figure(
        run_dir, max_images, values,
        lambda before, after, n: anchor_iou_shift_figure(
            before, after,
            title=f"IoU with the matched ground truth, anchors before and after refinement ({n} images)"))


RUN_FIGURES = (
    RunFigure("anchors before and after refinement (the anchor refinement module)", anchor_refinement_figures,
              needs="traces", per_image=True),
    RunFigure("IoU of the matched anchors with their ground truth before and after refinement",
              anchor_iou_shift_figures, needs="traces"),
)

__all__ = ["RUN_FIGURES", "SHOWN_ANCHORS", "anchor_iou_shift_figures", "anchor_refinement_figures"]
