"""The uncertainty-rescaling method's own figures of a run (:class:`workbench.methods.RunFigure`),
from its saved traces: the BALD map of the objectness (the paper's uncertainty map, eq. 2) per
scale and its maximum over the scales, over the image with its ground truth."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from workbench import records as R
from workbench.methods import RunFigure


def bald_map_figures(run_dir: Path | str, *, max_images: int, device: str = "cpu") -> list[go.Figure]:
    """Per traced image (the first ``max_images``): the BALD maps of its
    :data:`~workbench.records.UNCERTAINTY_MAP` record (:func:`workbench.viz.uncertainty.uncertainty_map_figure`)."""
    from workbench.methods.uncertainty.analysis import uncertainty_maps
    from workbench.pipelines.runs import figures_per_traced_image
    from workbench.viz.uncertainty import uncertainty_map_figure

    def draw(item):
        record = item.records[R.UNCERTAINTY_MAP]
        return uncertainty_map_figure(uncertainty_maps(record), record[R.MAP_CELL_SIZE].tolist(), image=item.image,
                                      boxes=item.gt["boxes"],
                                      title=f"uncertainty map (BALD of the objectness): {item.label}")

    return figures_per_traced_image(run_dir, max_images, R.UNCERTAINTY_MAP, draw)


RUN_FIGURES = (
    RunFigure("BALD of the objectness over the image (uncertainty map)", bald_map_figures, needs="traces",
              per_image=True),
)

__all__ = ["RUN_FIGURES", "bald_map_figures"]
