"""The methods the workbench trains, each a package that adds only what differs from its
baseline. ``METHODS`` is the one registry: method name -> module defining ``METHOD``.

A :class:`Method` declares everything generic code needs to know about it, so that the engine,
``export/``, ``inspection/``, ``viz/``, the report and the notebooks never name a method:

- its paper and its baseline (the registered method it is compared against; ``None`` for a
  baseline), listed by ``workbench methods`` and used to group a comparison;
- its model config type and builder ``build_model(model_cfg, num_classes)``;
- its presets (plain functions returning a ``TrainConfig``); a method that only adds parts to
  its baseline takes the baseline's presets with its own model (:meth:`Method.extended`);
- its data transforms for training and evaluation (``None``: the two-stage defaults, see
  :meth:`Method.training_transforms` / :meth:`Method.evaluation_transforms`);
- its trace records and how each is shown (:class:`RecordView`): a box record as a FiftyOne
  ``Detections`` field and a figure layer, the suppressed boxes of an NMS record, a map record
  as a heatmap, a per-box field as an attribute of the boxes it belongs to. Record names are
  the constants of :mod:`workbench.records`;
- the figures of its own that apply to a run of it (:class:`RunFigure`: KL-RPN's sigma maps,
  RefineDet's anchors before and after refinement...), which the report and the comparison
  notebook show per run after the generic ones.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from workbench import records as R
from workbench.config import TrainConfig
from workbench.errors import ConfigError

METHODS: dict[str, str] = {
    "cascade_iou_uniform": "workbench.methods.iou_uniform.cascade",
    "cascade_rcnn": "workbench.methods.cascade_rcnn",
    "faster_rcnn": "workbench.methods.faster_rcnn",
    "iou_uniform": "workbench.methods.iou_uniform",
    "kl_rpn": "workbench.methods.kl_rpn",
    "libra_rcnn": "workbench.methods.libra.rcnn",
    "libra_retinanet": "workbench.methods.libra.retinanet",
    "refinedet": "workbench.methods.refinedet",
    "retinanet": "workbench.methods.retinanet",
    "ssd": "workbench.methods.ssd",
    "uncertainty_rescaling": "workbench.methods.uncertainty",
    "yolov3": "workbench.methods.yolov3",
}

#: How a record can be shown (see :class:`RecordView`).
VIEW_KINDS = ("boxes", "suppressed", "heatmap", "attribute")


@dataclass(frozen=True)
class RecordView:
    """How one trace record (or one field of it) is shown in figures and in the FiftyOne App.

    - ``record``: the record name (a constant of :mod:`workbench.records`);
    - ``kind``:

      - ``"boxes"``: a box record (``boxes``, ``scores``, optional ``labels``) drawn as boxes;
        in FiftyOne a ``Detections`` field named ``field`` (boxes without ``labels`` are
        labelled ``box_label``), at most ``max_boxes`` of them (the record's first, i.e. its
        highest-scored; ``None``: all);
      - ``"suppressed"``: an NMS record whose suppressed boxes are shown, each linked to the
        box that suppressed it; in FiftyOne a ``Detections`` field ``field`` whose boxes name
        the detection that suppressed them (``suppressed_by``) and their IoU;
      - ``"heatmap"``: a map record; its field ``value`` (a 2-D map) is drawn over the image;
        in FiftyOne a ``Heatmap`` field named ``field``;
      - ``"attribute"``: the per-box field ``value`` (``(N,)`` or ``(N, K)``) of a box record,
        shown with its boxes (hover text; a FiftyOne attribute named ``field`` of each box);

    - ``field``: the FiftyOne field (``boxes``, ``suppressed``, ``heatmap``) or attribute name;
    - ``label``: what it shows, in words (figure legends, colour bars, the App's description);
    - ``value``: the record field shown (``heatmap``: required; ``attribute``: default
      ``field``);
    - ``layer``: the figure layer's name (default: ``field``);
    - ``shown``: drawn when the App or a figure opens (otherwise a click away);
    - ``higher``: for heatmaps, what a higher value means (``"more uncertain"``...), for the
      colour bar;
    - ``app``: exported to FiftyOne (``False``: figures only, e.g. a map per coordinate);
    - ``uncertainty``: the value measures the box's uncertainty (higher: more uncertain); for an
      ``"attribute"`` of the detections, the FiftyOne export saves a view of the detections
      with the highest values.
    """

    record: str
    kind: str
    field: str
    label: str
    value: str | None = None
    layer: str | None = None
    max_boxes: int | None = None
    box_label: str | None = None
    shown: bool = False
    higher: str | None = None
    app: bool = True
    uncertainty: bool = False

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"unknown view kind {self.kind!r}; known: {', '.join(VIEW_KINDS)}")
        if self.kind == "heatmap" and not self.value:
            raise ValueError(f"the heatmap view {self.field!r} must name the map field it shows (value=...)")

    @property
    def layer_name(self) -> str:
        return self.layer or self.field

    @property
    def value_field(self) -> str:
        """The record field shown (attributes default to ``field``)."""
        return self.value or self.field

    @property
    def title(self) -> str:
        """``label`` with what a higher value means, for a colour bar or a heading."""
        return f"{self.label} (higher: {self.higher})" if self.higher else self.label


#: What every two-stage detector records and how it is shown: its detections, the RPN's
#: proposals after NMS (the first 100) and the boxes its final NMS suppressed.
DETECTIONS_VIEW = RecordView(R.DETECTIONS, "boxes", field="predictions", layer="detections",
                             label="detections", shown=True)
PROPOSALS_VIEW = RecordView(R.PROPOSALS, "boxes", field="proposals", layer="proposals",
                            label="RPN proposals after NMS", max_boxes=100, box_label="proposal")
SUPPRESSED_VIEW = RecordView(R.FINAL_NMS, "suppressed", field="suppressed", layer="suppressed",
                             label="boxes suppressed by the final NMS")
TWO_STAGE_VIEWS: tuple[RecordView, ...] = (DETECTIONS_VIEW, PROPOSALS_VIEW, SUPPRESSED_VIEW)
#: Single-stage detectors: no proposals.
SINGLE_STAGE_VIEWS: tuple[RecordView, ...] = (DETECTIONS_VIEW, SUPPRESSED_VIEW)


#: What a :class:`RunFigure` reads of a run (see there).
FIGURE_NEEDS = ("traces", "checkpoint", "config")


@dataclass(frozen=True)
class RunFigure:
    """A figure a method declares for its runs, built by generic code without naming the method.

    - ``title``: what it shows, in words (a heading of the report);
    - ``build``: ``build(run_dir, *, max_images, device) -> list[go.Figure]``, from the run's
      folder, drawing on at most ``max_images`` images; it calls the pure builders of
      :mod:`workbench.viz` and gives no figure when the run lacks what it shows (e.g. a map
      record its traces do not hold);
    - ``needs``: what it reads: ``"traces"`` (the saved traces of the validation split: the
      report says how to write them where there are none, it does not predict), ``"checkpoint"``
      (it runs the model on ``device``) or ``"config"`` (the run's config alone);
    - ``per_image``: one figure per image (drawn on few images) rather than one pooled over up
      to ``max_images`` images.
    """

    title: str
    build: Callable[..., Sequence[Any]]
    needs: str = "traces"
    per_image: bool = False

    def __post_init__(self) -> None:
        if self.needs not in FIGURE_NEEDS:
            raise ValueError(f"unknown need {self.needs!r} of the figure {self.title!r}; "
                             f"known: {', '.join(FIGURE_NEEDS)}")


@dataclass(frozen=True)
class Method:
    """A method's declaration (see the module docstring). The fields after ``presets`` are
    optional: their defaults describe the two-stage baseline."""

    name: str
    description: str
    model_config_type: type
    build_model: Callable[[Any, int], nn.Module]
    presets: Mapping[str, Callable[[], TrainConfig]]
    #: ``cfg -> transform`` of training samples; ``None``: the two-stage default, a horizontal
    #: flip (``workbench.data.transforms.train_transforms_rcnn(cfg.data.hflip_prob)``).
    train_transforms: Callable[[TrainConfig], Any] | None = None
    #: ``cfg -> transform`` of evaluation samples; ``None``: none (the model resizes).
    eval_transforms: Callable[[TrainConfig], Any] | None = None
    #: The records the method's detector writes to a trace and how each is shown.
    record_views: tuple[RecordView, ...] = TWO_STAGE_VIEWS
    #: The paper the method follows: title, first author, venue and year.
    paper: str | None = None
    #: The registered method it is compared against (``None``: the method is a baseline).
    baseline: str | None = None
    #: The method's own figures of a run (:class:`RunFigure`), shown after the generic ones.
    run_figures: tuple[RunFigure, ...] = ()

    def __post_init__(self) -> None:
        seen: set[tuple[str, str]] = set()
        for view in self.record_views:
            key = (view.kind, view.field) if view.kind != "attribute" else (view.record, view.field)
            if key in seen:
                raise ValueError(f"method {self.name!r} declares the view {view.field!r} twice")
            seen.add(key)

    def training_transforms(self, cfg: TrainConfig) -> Any:
        """The transform of training samples for ``cfg``: the declared one or the default, or
        the default flip alone with ``cfg.data.augmentation == "flip"``."""
        if self.train_transforms is not None and cfg.data.augmentation != "flip":
            return self.train_transforms(cfg)
        from workbench.data.transforms import train_transforms_rcnn

        return train_transforms_rcnn(cfg.data.hflip_prob)

    def evaluation_transforms(self, cfg: TrainConfig) -> Any:
        """The transform of evaluation samples for ``cfg`` (``None``: none)."""
        return None if self.eval_transforms is None else self.eval_transforms(cfg)

    def views(self, kind: str | None = None, record: str | None = None) -> tuple[RecordView, ...]:
        """The declared views, optionally only those of one ``kind`` and / or ``record``."""
        return tuple(v for v in self.record_views
                     if (kind is None or v.kind == kind) and (record is None or v.record == record))

    @property
    def records(self) -> tuple[str, ...]:
        """The record names the declared views show, in declaration order."""
        return tuple(dict.fromkeys(v.record for v in self.record_views))

    def extended(
        self,
        name: str,
        description: str,
        model_config_type: type,
        build_model: Callable[[Any, int], nn.Module],
        wrap_model: Callable[[str, Any], Any],
        presets: Sequence[str],
        paper: str | None = None,
        run_figures: Sequence[RunFigure] = (),
    ) -> Method:
        """The method ``name`` that adds parts to this one (its baseline) and changes nothing
        else, as Cascade R-CNN, Libra R-CNN and Libra RetinaNet do: each of this method's
        ``presets`` with the method renamed and the model config ``wrap_model(preset name,
        baseline model config)``; data, schedule, optimiser, transforms and record views stay
        this method's, so a comparison with the baseline differs only in the model. Its figures
        are this method's and ``run_figures``, those of the parts it adds."""
        derived = {preset: functools.partial(_extended_preset, self.presets[preset], name, preset, wrap_model)
                   for preset in presets}
        return dataclasses.replace(self, name=name, description=description, model_config_type=model_config_type,
                                   build_model=build_model, presets=derived, paper=paper, baseline=self.name,
                                   run_figures=(*self.run_figures, *run_figures))


def _extended_preset(baseline_preset: Callable[[], TrainConfig], method: str, preset: str,
                     wrap_model: Callable[[str, Any], Any]) -> TrainConfig:
    """``baseline_preset()`` as a preset of ``method``: renamed, its model wrapped."""
    cfg = baseline_preset()
    return dataclasses.replace(cfg, method=method, model=wrap_model(preset, cfg.model))


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return importlib.import_module(METHODS[name]).METHOD


def record_views(name: str | None) -> tuple[RecordView, ...]:
    """The views of method ``name`` (e.g. a trace's ``method``); the two-stage views for a
    name the registry does not know (traces of a method removed since)."""
    if name is None or name not in METHODS:
        return TWO_STAGE_VIEWS
    return get_method(name).record_views


def describe_method(name: str) -> dict[str, Any]:
    """What ``workbench methods`` lists of method ``name``: description, paper, baseline, presets,
    the trace records with how each is shown (``record -> [(kind, field), ...]``) and the titles
    of its own figures of a run."""
    method = get_method(name)
    records: dict[str, list[tuple[str, str]]] = {}
    for view in method.record_views:
        records.setdefault(view.record, []).append((view.kind, view.field))
    return {"name": name, "description": method.description, "paper": method.paper,
            "baseline": method.baseline, "presets": list(method.presets), "records": records,
            "figures": [figure.title for figure in method.run_figures]}


def build_preset(method: str, preset: str) -> TrainConfig:
    m = get_method(method)
    if preset not in m.presets:
        raise ConfigError(f"method {method!r} has no preset {preset!r}; available: {', '.join(sorted(m.presets))}")
    return m.presets[preset]()


__all__ = [
    "DETECTIONS_VIEW",
    "FIGURE_NEEDS",
    "METHODS",
    "Method",
    "PROPOSALS_VIEW",
    "RecordView",
    "RunFigure",
    "SINGLE_STAGE_VIEWS",
    "SUPPRESSED_VIEW",
    "TWO_STAGE_VIEWS",
    "VIEW_KINDS",
    "build_preset",
    "describe_method",
    "get_method",
    "record_views",
]
