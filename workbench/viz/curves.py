"""Curves: training losses, learning rate and evaluation AP from ``metrics.jsonl`` records, and
per-class precision-recall curves.

Training records are the run directory's JSON lines (:mod:`workbench.engine.run_dir`):
``{"kind": "train", "step", "epoch", "lr", "loss", "loss_<stage>_<kind>", ...}`` and
``{"kind": "eval", "epoch", "AP", "AP50", ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from workbench.viz.boxes import to_numpy

EVAL_KEYS = ("AP", "AP50", "AP75")


def _of_kind(records: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("kind") == kind]


def loss_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The loss keys of the training records: ``loss`` (the total) first, then the parts."""
    names = dict.fromkeys(k for r in _of_kind(records, "train") for k in r if k.startswith("loss"))
    return sorted(names, key=lambda k: (k != "loss", k))


def _series(records: Sequence[Mapping[str, Any]], x: str, y: str) -> tuple[list, list]:
    """x and y of the records that have a finite ``y``."""
    pairs = [(r[x], r[y]) for r in records if r.get(y) is not None and np.isfinite(r[y])]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def training_curves_figure(records: Sequence[Mapping[str, Any]], *, title: str = "Training") -> go.Figure:
    """Three panels: every loss part per step, the learning rate per step, and evaluation
    ``AP``/``AP50``/``AP75`` per epoch."""
    train, evals = _of_kind(records, "train"), _of_kind(records, "eval")
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.1,
                        subplot_titles=("losses", "learning rate", "evaluation (val)"))
    for name in loss_names(records):
        x, y = _series(train, "step", name)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, meta={"panel": "losses", "key": name},
                                 line=dict(width=2.5 if name == "loss" else 1.2)), row=1, col=1)
    x, y = _series(train, "step", "lr")
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="lr", meta={"panel": "lr", "key": "lr"}),
                  row=2, col=1)
    for key in EVAL_KEYS:
        x, y = _series(evals, "epoch", key)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=key, meta={"panel": "eval", "key": key}),
                      row=3, col=1)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=3, col=1)
    fig.update_layout(title=title, height=850)
    return fig


def compare_curves_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str = "Runs") -> go.Figure:
    """Runs side by side: the total training loss per step and the evaluation AP per epoch, one
    colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "AP (val)"))
    for i, (name, records) in enumerate(runs.items()):
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        x, y = _series(_of_kind(records, "train"), "step", "loss")
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, legendgroup=name, line=dict(color=color),
                                 meta={"run": name, "key": "loss"}), row=1, col=1)
        x, y = _series(_of_kind(records, "eval"), "epoch", "AP")
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legendgroup=name, showlegend=False,
                                 line=dict(color=color), meta={"run": name, "key": "AP"}), row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=2)
    fig.update_layout(title=title, height=420)
    return fig


def _band(fig: go.Figure, xs: list, mean: list, std: list, *, color: str, name: str, key: str, row: int, col: int,
          mode: str, showlegend: bool) -> None:
    """A mean line with a mean +- std band (where a std exists) in one subplot."""
    spread = [0.0 if s is None else s for s in std]
    if any(s is not None for s in std):
        upper = [m + s for m, s in zip(mean, spread)]
        lower = [m - s for m, s in zip(mean, spread)]
        fig.add_trace(go.Scatter(x=[*xs, *xs[::-1]], y=[*upper, *lower[::-1]], fill="toself", fillcolor=color,
                                 opacity=0.2, line=dict(width=0), hoverinfo="skip", showlegend=False,
                                 legendgroup=name, meta={"group": name, "key": key, "layer": "spread"}),
                      row=row, col=col)
    fig.add_trace(go.Scatter(x=xs, y=mean, mode=mode, name=name, legendgroup=name, showlegend=showlegend,
                             line=dict(color=color), meta={"group": name, "key": key, "layer": "mean", "std": std}),
                  row=row, col=col)


def group_curves_figure(groups: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], *,
                        title: str = "Training loss and AP, mean over seeds") -> go.Figure:
    """Groups of runs (label -> the ``metrics.jsonl`` records of each of its runs) side by side:
    the total training loss per step and the evaluation AP per epoch, each the mean over the
    group's runs with a +- one sample standard deviation band (none for one run)."""
    from workbench.evaluation.grouping import mean_curve

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "AP (val)"))
    for i, (name, runs) in enumerate(groups.items()):
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        label = f"{name} ({len(runs)} run{'s' if len(runs) != 1 else ''})"
        xs, mean, std = mean_curve(runs, kind="train", x="step", y="loss")
        _band(fig, xs, mean, std, color=color, name=label, key="loss", row=1, col=1, mode="lines", showlegend=True)
        xs, mean, std = mean_curve(runs, kind="eval", x="epoch", y="AP")
        _band(fig, xs, mean, std, color=color, name=label, key="AP", row=1, col=2, mode="lines+markers",
              showlegend=False)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=2)
    fig.update_layout(title=title, height=420)
    return fig


def pr_curves_figure(
    curves: Mapping[int, tuple[Any, Any]],
    *,
    class_names: Mapping[int, str] | None = None,
    title: str = "Precision-recall per class (IoU 0.50)",
) -> go.Figure:
    """One line per class from ``category id -> (recall, precision)`` (as
    :meth:`workbench.evaluation.CocoEvaluation.precision_recall_curves` returns). The legend
    gives each class's AP: the mean interpolated precision over the recall points."""
    fig = go.Figure()
    for category_id, (recall, precision) in curves.items():
        r, p = to_numpy(recall), to_numpy(precision)
        name = (class_names or {}).get(category_id, f"category {category_id}")
        ap = float(np.mean(np.clip(p, 0, None))) if p.size else float("nan")
        fig.add_trace(go.Scatter(
            x=r, y=p, mode="lines", name=f"{name} (AP {ap:.3f})", line_shape="hv",
            meta={"category_id": int(category_id), "ap": ap},
            hovertemplate=f"{name}<br>recall %{{x:.2f}}<br>precision %{{y:.3f}}<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title="recall", yaxis_title="precision",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig
