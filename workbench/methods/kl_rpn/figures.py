"""KL-RPN's own figures of a run (:class:`workbench.methods.RunFigure`), from its saved traces:
the predicted offset sigma over the image, one panel per declared map (the paper's uncertainty
map, section 2: a lower sigma is a more confident anchor, scored higher)."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from workbench import records as R
from workbench.methods import RunFigure
from workbench.methods.kl_rpn.uncertainty import RECORD_VIEWS


def sigma_map_figures(run_dir: Path | str, *, max_images: int, device: str = "cpu") -> list[go.Figure]:
    """Per traced image (the first ``max_images``): the sigma maps of its
    :data:`~workbench.records.UNCERTAINTY_MAP` record over the image with its ground truth
    (:func:`workbench.viz.maps.map_panels_figure`); images without the record give none."""
    from workbench.pipelines.runs import figures_per_traced_image
    from workbench.viz.maps import map_panels_figure

    return figures_per_traced_image(
        run_dir, max_images, R.UNCERTAINTY_MAP,
        lambda item: map_panels_figure(item.records[R.UNCERTAINTY_MAP], RECORD_VIEWS, image=item.image,
                                       boxes=item.gt["boxes"],
                                       title=f"offset sigma at the anchor centres: {item.label}"))


RUN_FIGURES = (
    RunFigure("predicted sigma of the box offsets over the image (uncertainty map)", sigma_map_figures,
              needs="traces", per_image=True),
)

__all__ = ["RUN_FIGURES", "sigma_map_figures"]
