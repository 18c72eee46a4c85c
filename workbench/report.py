"""A static HTML report of one or more runs: the metrics table and the key figures in one
self-contained file (plotly.js is inside it; it opens offline, from disk or an e-mail).

A report takes any set of runs, e.g. several seeds of several methods. Runs of the same method
and preset form a group (:mod:`workbench.evaluation.grouping`).

Sections, in order: final metrics of every run; training loss and AP of every run; per group of
runs (method and preset), the metrics as mean ± spread over its seeds, the inference speed per
image, AP against the IoU threshold, the training curves averaged over seeds and AP per class
(mean ± spread); per run (by
default only the first run of each group, ``all_runs=True`` for every run), its training curves
and per-class precision-recall curves; for those runs with proposals, proposal recall
AR@100/300/1000 and the offsets of their highest- and lowest-objectness proposals to the ground
truth (the figure of the KL-RPN paper, Fig. 3); per run, its proposal score histogram, one image
with detections and suppressed boxes, the NMS slider of that image, one figure per map its
method declares and the figures its method declares of a run (``Method.run_figures``).

What a run shows comes from its method's declaration (``Method.record_views`` and
``Method.run_figures``, see :mod:`workbench.methods`): this module names no method and no
method's record.

```python
from workbench.report import build_report
build_report(["runs/frcnn", "runs/kl"], "report.html")
```
or ``workbench report --run runs/frcnn --run runs/kl --out report.html``.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import plotly.graph_objects as go

from workbench import records as R
from workbench.atomic import write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class Section:
    """One heading with a figure (or only a note) under it."""

    title: str
    figure: go.Figure | None = None
    note: str = ""


def _first_free(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def run_names(run_dirs: Sequence[Path | str], names: Sequence[str] | None = None) -> list[str]:
    """Display names: the given ones, else the folder names, with their parent folder's name
    when folder names repeat (``METHOD/seed_0``: seeds laid out per method), made unique."""
    if names:
        if len(names) != len(run_dirs):
            raise ValueError(f"{len(names)} names for {len(run_dirs)} runs")
        return [str(n) for n in names]
    folders = [Path(path).absolute() for path in run_dirs]
    repeated = len({p.name for p in folders}) < len(folders)
    taken: set[str] = set()
    out = []
    for path in folders:
        out.append(_first_free(f"{path.parent.name}/{path.name}" if repeated else path.name, taken))
        taken.add(out[-1])
    return out


def summary_sections(runs) -> list[Section]:
    """Final metrics of every run and their training loss / AP side by side."""
    from workbench.engine.timing import without_timing
    from workbench.viz.curves import compare_curves_figure
    from workbench.viz.tables import metrics_table_figure

    rows = {r.name: {"method": r.method, "preset": r.preset, **without_timing(r.final)} for r in runs}
    return [
        Section("Final COCO metrics (validation)", metrics_table_figure(rows, title="")),
        Section("Training loss and AP per epoch", compare_curves_figure({r.name: r.records for r in runs}, title="")),
    ]


#: The heading of the speed table (report and notebook).
SPEED_TITLE = ("Inference speed per image by method and preset: forward pass, mean ± sample standard deviation "
               "over the timed seeds (n/a: no timed evaluation)")


def group_sections(runs) -> list[Section]:
    """Per group of runs (method and preset): the metrics table with mean ± spread over seeds,
    the inference speed per image (mean ± spread over the timed seeds, with where it was
    measured), AP against IoU threshold and the training curves averaged over seeds."""
    from workbench.evaluation.grouping import group_runs, group_table_rows, speed_table_rows
    from workbench.viz.curves import group_curves_figure
    from workbench.viz.iou import AP_KEYS, ap_per_iou_figure
    from workbench.viz.tables import metrics_table_figure

    groups = group_runs(runs)
    rows = group_table_rows(groups)
    speeds = speed_table_rows(groups, {r.name: r.speed for r in runs})
    return [
        Section("Metrics by method and preset: mean ± sample standard deviation over seeds (validation)",
                metrics_table_figure(rows, title="", row_header="method/preset")),
        Section(SPEED_TITLE, metrics_table_figure(speeds, title="", row_header="method/preset")),
        Section("AP against IoU threshold by method and preset (mean, bars: spread over seeds)",
                ap_per_iou_figure({g.label: g.metrics for g in groups}, keys=AP_KEYS, title="")),
        Section("Training loss and AP by method and preset, mean over seeds",
                group_curves_figure({g.label: [r.records for r in g.runs] for g in groups}, title="")),
    ]


def ap_per_class_of_runs(runs) -> dict[str, dict[str, float]]:
    """Run name -> class name -> AP@[0.50:0.95] from the run's predictions file (``workbench
    predict``); runs without one are left out."""
    from workbench.pipelines.runs import category_names, evaluation_from_predictions, run_dataset

    out = {}
    for run in runs:
        evaluation = evaluation_from_predictions(run.path)
        if evaluation is None:
            continue
        names = category_names(run_dataset(run.path))
        out[run.name] = {names.get(c, str(c)): ap for c, ap in evaluation.ap_per_category().items()}
    return out


def per_class_sections(runs) -> list[Section]:
    """AP per class by method and preset, mean ± spread over seeds, from the predictions files."""
    from workbench.evaluation.grouping import group_runs, value_table_rows
    from workbench.viz.tables import metrics_table_figure

    title = "AP per class by method and preset: mean ± sample standard deviation over seeds (validation)"
    per_class = ap_per_class_of_runs(runs)
    if not per_class:
        return [Section(title, note="no predictions files; run `workbench predict`")]
    rows = value_table_rows(group_runs(runs), per_class)
    return [Section(title, metrics_table_figure(rows, title="", row_header="method/preset"))]


def detail_runs(runs, all_runs: bool = False) -> list:
    """The runs shown one by one: all of them, or the first run of each group."""
    if all_runs:
        return list(runs)
    from workbench.evaluation.grouping import group_runs

    first = {id(g.runs[0]) for g in group_runs(runs)}
    return [r for r in runs if id(r) in first]


def run_curve_sections(run) -> list[Section]:
    """One run's training curves and per-class precision-recall curves."""
    from workbench.pipelines.runs import category_names, evaluation_from_predictions, run_dataset
    from workbench.viz.curves import pr_curves_figure, training_curves_figure

    sections = [Section(f"{run.name}: training curves", training_curves_figure(run.records, title=""))]
    evaluation = evaluation_from_predictions(run.path)
    if evaluation is None:
        sections.append(Section(f"{run.name}: precision-recall", note="no predictions file; run `workbench predict`"))
    else:
        names = category_names(run_dataset(run.path))
        figure = pr_curves_figure(evaluation.precision_recall_curves(0.5), class_names=names, title="")
        sections.append(Section(f"{run.name}: precision-recall per class (IoU 0.50, validation)", figure))
    return sections


def _views(run):
    from workbench.methods import record_views

    return record_views(run.method)


def _has_proposals(run) -> bool:
    return any(v.kind == "boxes" and v.record == R.PROPOSALS for v in _views(run))


def runs_with_proposals(runs) -> list:
    """The runs whose method declares proposals (a boxes view of
    :data:`workbench.records.PROPOSALS`), in order: those that proposal recall and the
    objectness-offsets figure apply to."""
    return [r for r in runs if _has_proposals(r)]


def proposal_sections(runs, *, max_images: int, top_n: int, device: str) -> list[Section]:
    """Proposal recall of every run with proposals and their offsets to the ground truth by
    objectness (none without such runs)."""
    from workbench.evaluation.proposals import run_proposal_recall
    from workbench.pipelines.runs import objectness_offsets_of_runs
    from workbench.viz.proposals import objectness_offsets_figure
    from workbench.viz.tables import metrics_table_figure

    with_proposals = runs_with_proposals(runs)
    if not with_proposals:
        return []
    recall = {r.name: run_proposal_recall(r.path, max_images=max_images, top_n=top_n, device=device)
              for r in with_proposals}
    columns = ["AR@100", "AR@300", "AR@1000", "R50@1000", "R70@1000"]
    figure = objectness_offsets_figure(objectness_offsets_of_runs(with_proposals, max_images=max_images, device=device))
    return [
        Section(f"Proposal recall (top {top_n} per image, first {max_images} validation images at most)",
                metrics_table_figure(recall, columns=columns, title="")),
        Section("Offsets to ground truth of the highest / lowest objectness proposals (KL-RPN paper, Fig. 3)", figure),
    ]


#: The note of a section that reads traces the run has none of.
NO_TRACES = "no traces; run `workbench predict --trace`"


def trace_sections(run, *, score_threshold: float = 0.3, top_k: int = 100) -> list[Section]:
    """From the run's saved traces: proposal score histograms, the first image with detections
    and suppressed boxes, its NMS slider and one figure per declared heatmap (none without
    traces)."""
    from workbench.engine.trainer import load_run_config
    from workbench.inspection import load_traces
    from workbench.inspection.maps import cell_size
    from workbench.pipelines.runs import has_traces, run_dataset
    from workbench.viz.explorer import explorer_images
    from workbench.viz.images import trace_image_figure
    from workbench.viz.maps import map_overlay_figure
    from workbench.viz.nms import nms_input, nms_slider_figure
    from workbench.viz.scores import pooled_scores, score_histogram_figure

    split = load_run_config(run.path).data.val_split
    if not has_traces(run.path, split):
        return [Section(f"{run.name}: inside the detector", note=NO_TRACES)]
    traces = load_traces(run.path, split)
    views = _views(run)
    dataset = run_dataset(run.path, traces.split)
    (item,) = explorer_images([traces[0]], dataset)
    sections = []
    for view in (v for v in views if v.kind == "boxes" and v.record == R.PROPOSALS):
        # streamed one image at a time: a trace set reads its shards lazily
        before = pooled_scores((t.records for t in traces), R.PROPOSALS_PRE_NMS)
        after = pooled_scores((t.records for t in traces), view.record)
        sections.append(Section(f"{run.name}: scores of the {view.field} before and after NMS ({len(traces)} images)",
                                score_histogram_figure({"before NMS": before, "after NMS": after},
                                                       density=True, title="")))
    sections.append(Section(f"{run.name}: detections (score >= {score_threshold}) and suppressed boxes, {item.label}",
                            trace_image_figure(item.records, views=views, image=item.image, gt=item.gt,
                                               score_threshold=score_threshold, class_names=dataset.class_names,
                                               layers=("gt", "detections", "suppressed"))))
    for view in (v for v in views if v.kind == "suppressed" and v.record in item.records):
        chosen = nms_input(item.records[view.record], top_k=top_k)
        sections.append(Section(f"{run.name}: final NMS at other IoU thresholds (top {top_k} candidates), {item.label}",
                                nms_slider_figure(chosen["boxes"], chosen["scores"], chosen.get("idxs"), image=item.image,
                                                  class_names=dataset.class_names, title="NMS")))
    for view in (v for v in views if v.kind == "heatmap" and v.shown):
        record = item.records.get(view.record)
        if record is None or view.value_field not in record:
            continue
        sections.append(Section(f"{run.name}: {view.title}, {item.label}",
                                map_overlay_figure(record[view.value_field], cell=cell_size(record, view.value_field), image=item.image,
                                                   boxes=item.gt["boxes"], name=view.layer_name,
                                                   colorbar_title=view.layer_name, title="")))
    return sections


def method_figure_sections(run, *, max_images: int = 50, figure_images: int = 1, device: str = "cpu") -> list[Section]:
    """The figures the run's method declares (``Method.run_figures``, none for a method the
    registry does not know), one section each, titled by the run and the figure: per-image
    figures drawn on the first ``figure_images`` traced images, the others pooled over up to
    ``max_images``. A figure that reads traces the run has none of gets a note instead (the
    report does not predict); one that finds nothing to show, a note saying so."""
    from workbench.methods import METHODS, get_method
    from workbench.pipelines.runs import has_traces

    declared = get_method(run.method).run_figures if run.method in METHODS else ()
    sections = []
    for figure in declared:
        title = f"{run.name}: {figure.title}"
        if figure.needs == "traces" and not has_traces(run.path):
            sections.append(Section(title, note=NO_TRACES))
            continue
        built = figure.build(run.path, max_images=figure_images if figure.per_image else max_images, device=device)
        sections += [Section(title, fig) for fig in built] or [Section(title, note="nothing to show for this run")]
    return sections


def report_sections(
    run_dirs: Sequence[Path | str], names: Sequence[str] | None = None, *, max_images: int = 50,
    recall_top_n: int = 1000, device: str = "cpu", all_runs: bool = False,
) -> list[Section]:
    """Every section of the report (see the module docstring)."""
    from workbench.pipelines.runs import load_run

    runs = [load_run(path, name) for path, name in zip(run_dirs, run_names(run_dirs, names))]
    sections = summary_sections(runs) + group_sections(runs) + per_class_sections(runs)
    shown = detail_runs(runs, all_runs)
    for run in shown:
        sections += run_curve_sections(run)
    sections += proposal_sections(shown, max_images=max_images, top_n=recall_top_n, device=device)
    for run in shown:
        sections += trace_sections(run) + method_figure_sections(run, max_images=max_images, device=device)
    return sections


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
p.note { color: #555; } .meta { color: #777; font-size: 0.9em; }
"""


def render_html(sections: Sequence[Section], title: str) -> str:
    """One HTML page: plotly.js once in the head, then each section's heading and figure."""
    from plotly.offline import get_plotlyjs

    parts = [
        "<!DOCTYPE html>", "<html>", "<head>", '<meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        f"<style>{PAGE_STYLE}</style>", f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head>",
        "<body>", f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">written {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}</p>',
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f'<p class="note">{html.escape(section.note)}</p>')
        if section.figure is not None:
            parts.append(section.figure.to_html(full_html=False, include_plotlyjs=False))
    parts += ["</body>", "</html>"]
    return "\n".join(parts)


def write_report(sections: Sequence[Section], path: Path | str, *, title: str = "Detection workbench report") -> Path:
    """Write the sections as one self-contained HTML file."""
    return write_text_atomic(path, render_html(sections, title))


def build_report(
    run_dirs: Sequence[Path | str], out: Path | str, names: Sequence[str] | None = None, *,
    max_images: int = 50, recall_top_n: int = 1000, device: str = "cpu",
    title: str = "Detection workbench report", all_runs: bool = False,
) -> Path:
    """:func:`report_sections` of the runs written by :func:`write_report` to ``out``."""
    if not run_dirs:
        from workbench.errors import WorkbenchError

        raise WorkbenchError("a report needs at least one run (--run RUN_DIR)")
    sections = report_sections(run_dirs, names, max_images=max_images, recall_top_n=recall_top_n, device=device,
                               all_runs=all_runs)
    return write_report(sections, out, title=title)
