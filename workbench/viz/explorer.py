"""An ipywidgets explorer of traced images: pick an image, toggle layers, move thresholds.

The figure is :func:`workbench.viz.images.trace_image_figure` in a ``go.FigureWidget``; the
widgets only call it again (image, thresholds) or flip the visibility of a layer's traces
(toggles). Nothing here computes anything the pure builders do not.

```python
from workbench.viz.explorer import TraceExplorer, explorer_images
explorer = TraceExplorer(explorer_images(traces, dataset), class_names=dataset.class_names)
explorer            # the static first view, then the controls and the live figure
```

An executed notebook is a record opened later without a kernel, where widgets do not render
(papermill's output is untrusted, and a ``FigureWidget``'s saved state carries plotly.js itself,
about 5 MB). So displaying the explorer first displays its first view as a plain Plotly figure
(:meth:`TraceExplorer.static_figure`, a ``application/vnd.plotly.v1+json`` output like every
other figure of the notebook), then the live widget; the pipelines execute notebooks without
saving widget state (:func:`workbench.pipelines.runner.execute_notebook`), so a record holds the
figure once, not plotly.js. The static view is shown only in such a batch execution (the
runner sets :data:`RECORD_ENV` for the kernels it starts); live in JupyterLab the explorer is
the widget alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from workbench import records as R
from workbench.viz.boxes import to_numpy
from workbench.viz.images import LAYERS, default_views, per_box_scalars, trace_image_figure
from workbench.viz.maps import MAP_LAYER

#: Set (to 1) in the environment of kernels that execute a notebook as a record (papermill run by
#: the pipelines): the explorer then displays its static first view before the widget.
RECORD_ENV = "WORKBENCH_NOTEBOOK_RECORD"

#: Layers shown when the explorer opens.
DEFAULT_LAYERS = ("gt", "detections")
LAYER_LABELS = {
    "gt": "ground truth", "detections": "detections", "proposals": "proposals",
    "suppressed": "suppressed", MAP_LAYER: "map",
}


@dataclass
class ExplorerImage:
    """One image of the explorer: its pixels, its trace records and (optionally) ground truth
    (``boxes``, ``labels``); ``label`` names it in the picker."""

    image_id: int
    image: Any
    records: Mapping[str, Mapping[str, Any]]
    gt: Mapping[str, Any] | None = None
    label: str | None = None


def explorer_images(traces: Iterable[Any], dataset: Any, *, limit: int | None = None) -> list[ExplorerImage]:
    """Pair each trace (``image_id``, ``records``, optional ``file_name``) with its image and
    ground truth from ``dataset`` (found by image id), for at most ``limit`` traces."""
    items = []
    for trace in traces:
        if limit is not None and len(items) >= limit:
            break
        sample = dataset[dataset.index_of(int(trace.image_id))]
        name = getattr(trace, "file_name", None) or f"image {trace.image_id}"
        items.append(ExplorerImage(
            image_id=int(trace.image_id), image=sample.image, records=trace.records,
            gt={"boxes": sample.boxes, "labels": sample.labels}, label=f"{trace.image_id}: {name}",
        ))
    return items


def scalar_ranges(images: Sequence[ExplorerImage], record: str = R.DETECTIONS) -> dict[str, tuple[float, float]]:
    """The per-box scalars (:func:`workbench.viz.images.per_box_scalars`) of ``record`` over
    ``images``, each with its finite range over all of them, in order of first appearance: what
    the detections can be coloured by, on one scale for every image (so a colour means the same
    value whichever image is picked)."""
    ranges: dict[str, tuple[float, float]] = {}
    for item in images:
        for name, values in per_box_scalars(item.records.get(record, {})).items():
            finite = values[np.isfinite(values)]
            low, high = ranges.get(name, (np.inf, -np.inf))
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
            ranges[name] = (low, high)
    return {name: (low, high) if low <= high else (0.0, 1.0) for name, (low, high) in ranges.items()}


def _score_range(records: Mapping[str, Mapping[str, Any]], name: str | None) -> tuple[float, float]:
    scores = to_numpy(records[name]["scores"]) if name in records else np.zeros(0)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return 0.0, 1.0
    low, high = float(scores.min()), float(scores.max())
    return low, high if high > low else low + 1.0


def _recorded_iou(records: Mapping[str, Mapping[str, Any]], nms_record: str | None) -> float:
    nms = records.get(nms_record) if nms_record is not None else None
    return float(to_numpy(nms["iou_threshold"])) if nms is not None else 0.5


class TraceExplorer:
    """Controls and a ``FigureWidget`` over a list of :class:`ExplorerImage`.

    - ``picker``: the image;
    - ``toggles``: one checkbox per layer of :data:`workbench.viz.images.LAYERS`;
    - ``score``: the minimum score of detections and suppressed boxes;
    - ``proposal_score``: the minimum proposal score (its range follows the image's scores);
    - ``nms_iou``: the IoU threshold of the final NMS, re-run on the recorded candidates
      (at the recorded threshold the recorded detections are shown);
    - ``color_by``: the per-detection scalar the detections are coloured by (``None``: one
      colour), any the images' detection records carry (:func:`scalar_ranges`: the scores and
      the fields a method adds, e.g. a predicted IoU or an uncertainty), on its range over all
      images, with a colour bar.

    ``views``: the method's record views (``Method.record_views``; default the two-stage
    ones), which say where the proposals, the final NMS and the map are; ``heatmap`` picks a
    heatmap view by field (default: the first shown one).
    """

    def __init__(
        self,
        images: Sequence[ExplorerImage],
        *,
        class_names: Sequence[str] | None = None,
        views: Sequence[Any] | None = None,
        heatmap: str | None = None,
        color_by: str | None = None,
        score_threshold: float = 0.5,
        layers: Iterable[str] = DEFAULT_LAYERS,
        max_detections: int = 100,
        width: int = 720,
        height: int = 720,
    ) -> None:
        if not images:
            raise ValueError("the explorer needs at least one image")
        self.images = list(images)
        self.class_names = class_names
        self.views = tuple(default_views() if views is None else views)
        self.heatmap = heatmap
        self._nms_record = next((v.record for v in self.views if v.kind == "suppressed"), None)
        self._proposal_record = next((v.record for v in self.views if v.kind == "boxes" and v.record != R.DETECTIONS),
                                     None)
        self.max_detections = max_detections
        self._color_ranges = scalar_ranges(self.images, R.DETECTIONS)
        if color_by is not None and color_by not in self._color_ranges:
            raise ValueError(f"no per-detection scalar {color_by!r} in these images; "
                             f"available: {', '.join(self._color_ranges) or 'none'}")
        self._size = dict(width=width, height=height)
        self._quiet = False
        visible = set(layers)
        self.picker = widgets.Dropdown(
            options=[(item.label or f"image {item.image_id}", i) for i, item in enumerate(self.images)],
            value=0, description="image",
        )
        self.toggles = {
            layer: widgets.Checkbox(value=layer in visible, description=LAYER_LABELS[layer], indent=False)
            for layer in LAYERS
        }
        self.score = widgets.FloatSlider(value=score_threshold, min=0.0, max=1.0, step=0.01,
                                         description="score >=", continuous_update=False)
        self.proposal_score = widgets.FloatSlider(description="proposal >=", continuous_update=False)
        self.nms_iou = widgets.FloatSlider(min=0.05, max=0.95, step=0.05, description="NMS IoU",
                                           continuous_update=False)
        self.color_by = widgets.Dropdown(options=[("one colour", None), *((n, n) for n in self._color_ranges)],
                                         value=color_by, description="colour by")
        self._fit_sliders()
        self.figure = go.FigureWidget(self.build_figure())
        self._wire()

    # -- state ---------------------------------------------------------------------------
    @property
    def current(self) -> ExplorerImage:
        """The image the picker shows."""
        return self.images[self.picker.value]

    def visible_layers(self) -> list[str]:
        """The layers whose toggle is on."""
        return [layer for layer, box in self.toggles.items() if box.value]

    def build_figure(self) -> go.Figure:
        """The pure figure for the current controls."""
        item = self.current
        recorded = _recorded_iou(item.records, self._nms_record)
        nms_iou = None if np.isclose(self.nms_iou.value, recorded) else float(self.nms_iou.value)
        fig = trace_image_figure(
            item.records, views=self.views, heatmap=self.heatmap, image=item.image, gt=item.gt, score_threshold=float(self.score.value),
            proposal_threshold=float(self.proposal_score.value), nms_iou=nms_iou,
            max_detections=self.max_detections, class_names=self.class_names, layers=self.visible_layers(),
            color_by=self.color_by.value, color_range=self._color_ranges.get(self.color_by.value), title=item.label,
        )
        fig.update_layout(**self._size)
        return fig

    # -- wiring --------------------------------------------------------------------------
    def _wire(self) -> None:
        self.picker.observe(self._on_image, names="value")
        for control in (self.score, self.proposal_score, self.nms_iou, self.color_by):
            control.observe(self._on_threshold, names="value")
        for layer, box in self.toggles.items():
            box.observe(lambda change, layer=layer: self._on_toggle(layer, change["new"]), names="value")

    def _fit_sliders(self) -> None:
        """Proposal-score range and NMS IoU for the current image (without redrawing)."""
        low, high = _score_range(self.current.records, self._proposal_record)
        self._quiet = True
        try:
            self.proposal_score.min, self.proposal_score.max = -1e12, 1e12
            self.proposal_score.step = (high - low) / 100
            self.proposal_score.min, self.proposal_score.max = low, high
            self.proposal_score.value = low
            self.nms_iou.value = round(_recorded_iou(self.current.records, self._nms_record), 2)
        finally:
            self._quiet = False

    def _on_image(self, change: Mapping[str, Any]) -> None:
        self._fit_sliders()
        self.redraw()

    def _on_threshold(self, change: Mapping[str, Any]) -> None:
        if not self._quiet:
            self.redraw()

    def _on_toggle(self, layer: str, shown: bool) -> None:
        with self.figure.batch_update():
            for trace in self.figure.data:
                if (trace.meta or {}).get("layer") == layer:
                    trace.visible = shown

    def redraw(self) -> None:
        """Replace the figure's traces and layout by a fresh :meth:`build_figure`."""
        fresh = self.build_figure()
        self.figure.data = ()
        self.figure.add_traces(list(fresh.data))
        self.figure.layout = fresh.layout

    # -- display -------------------------------------------------------------------------
    def static_figure(self) -> go.Figure:
        """The figure for the current controls as a plain ``go.Figure``, titled as the static
        view it is (displayed before the widget: what a record keeps of the explorer); a copy of
        the live figure, not a second build."""
        fig = go.Figure(self.figure)
        fig.update_layout(title_text=f"{fig.layout.title.text}: the explorer's first view "
                                     "(static; the controls below need a running kernel)")
        return fig

    @property
    def widget(self) -> widgets.Widget:
        """The controls above the figure."""
        toggles = widgets.HBox([*self.toggles.values(), self.color_by])
        sliders = widgets.HBox([self.score, self.proposal_score, self.nms_iou])
        return widgets.VBox([self.picker, toggles, sliders, self.figure])

    def _ipython_display_(self) -> None:
        import os

        from IPython.display import display

        if os.environ.get(RECORD_ENV) == "1":
            display(self.static_figure(), self.widget)
        else:
            display(self.widget)
