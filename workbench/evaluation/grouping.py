"""Runs grouped by method and preset, their metrics summarised over seeds.

A comparison takes any set of runs (several seeds of several methods). Runs of the same
``(method, preset)`` form a group; each metric of a group is summarised by its mean over the
runs that report it and its spread, the sample standard deviation (``ddof=1``; ``None`` for a
single value). A metric no run of a group reports (VOC07 mAP of a run judged by COCO) is
``None`` there.

Everything here is pure: plain values in, plain values out (no files, no models). The inputs are
any objects with ``name``, ``method``, ``preset``, ``seed`` and ``final`` (the metrics dict)
attributes, such as :class:`workbench.pipelines.runs.RunSummary`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The metrics a comparison table shows, in order: COCO AP, AP at IoU 0.5..0.9, VOC07 11-point
#: mAP (runs judged by ``voc07`` only) and AR@100.
SUMMARY_KEYS: tuple[str, ...] = ("AP", "AP50", "AP60", "AP70", "AP80", "AP90", "voc07_mAP", "AR100")


@dataclass(frozen=True)
class RunGroup:
    """The runs of one ``(method, preset)``, in the order they were given."""

    method: str
    preset: str
    runs: tuple[Any, ...]

    @property
    def label(self) -> str:
        """``method/preset``, the group's name in tables and legends."""
        return f"{self.method}/{self.preset}"

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    @property
    def seeds(self) -> list[Any]:
        return [getattr(r, "seed", None) for r in self.runs]

    @property
    def metrics(self) -> list[Mapping[str, Any]]:
        """Each run's final metrics, in order."""
        return [r.final for r in self.runs]


def group_runs(runs: Iterable[Any]) -> list[RunGroup]:
    """Runs grouped by ``(method, preset)``, groups in the order of their first run."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for run in runs:
        groups.setdefault((run.method, run.preset), []).append(run)
    return [RunGroup(method, preset, tuple(members)) for (method, preset), members in groups.items()]


def mean_and_spread(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std, count)`` of the finite numbers among ``values`` (``None`` and NaN
    are left out); the mean is ``None`` without any, the spread ``None`` with fewer than two."""
    numbers = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(numbers)
    if n == 0:
        return None, None, 0
    mean = sum(numbers) / n
    if n < 2:
        return mean, None, n
    return mean, math.sqrt(sum((x - mean) ** 2 for x in numbers) / (n - 1)), n


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one group over its seeds."""

    mean: float | None
    std: float | None
    count: int


def summarize_group(group: RunGroup, keys: Sequence[str] = SUMMARY_KEYS) -> dict[str, MetricSummary]:
    """Metric name -> its :class:`MetricSummary` over the group's runs."""
    return {key: MetricSummary(*mean_and_spread(m.get(key) for m in group.metrics)) for key in keys}


def reported_keys(groups: Sequence[RunGroup], keys: Sequence[str] = SUMMARY_KEYS) -> list[str]:
    """The ``keys`` some run of ``groups`` reports (e.g. VOC07 mAP only where a run is judged by
    it), in order."""
    return [k for k in keys if any(m.get(k) is not None for g in groups for m in g.metrics)]


def format_summary(summary: MetricSummary, digits: int = 3) -> str | None:
    """``mean ± std`` (``mean`` alone for one seed; ``None`` when no run reports it)."""
    if summary.mean is None:
        return None
    if summary.std is None:
        return f"{summary.mean:.{digits}f}"
    return f"{summary.mean:.{digits}f} ± {summary.std:.{digits}f}"


def group_table_rows(groups: Sequence[RunGroup], keys: Sequence[str] | None = None, *,
                     digits: int = 3) -> dict[str, dict[str, Any]]:
    """Rows of a comparison table: group label -> ``method``, ``preset``, ``seeds`` (the seeds,
    comma separated), ``runs`` (how many) and ``mean ± std`` of each metric of ``keys`` (default:
    the :data:`SUMMARY_KEYS` some run reports)."""
    keys = reported_keys(groups) if keys is None else list(keys)
    rows = {}
    for group in groups:
        summary = summarize_group(group, keys)
        row: dict[str, Any] = {
            "method": group.method, "preset": group.preset,
            "seeds": ", ".join("?" if s is None else str(s) for s in group.seeds), "runs": len(group.runs),
        }
        row.update({key: format_summary(summary[key], digits) for key in keys})
        rows[group.label] = row
    return rows


def value_table_rows(groups: Sequence[RunGroup], values: Mapping[str, Mapping[str, Any]], *,
                     digits: int = 3) -> dict[str, dict[str, Any]]:
    """Rows of a table of other per-run values (e.g. AP per class): group label -> ``mean ±
    std`` over the group's runs of each key of ``values`` (run name -> key -> value), keys in
    first-seen order; runs missing from ``values`` are left out of their group."""
    keys = list(dict.fromkeys(k for row in values.values() for k in row))
    rows = {}
    for group in groups:
        present = [values[name] for name in group.names if name in values]
        rows[group.label] = {key: format_summary(MetricSummary(*mean_and_spread(v.get(key) for v in present)), digits)
                             for key in keys}
    return rows


#: The column of a speed table that holds the time per image.
SPEED_COLUMN = "ms / image"


def speed_table_rows(groups: Sequence[RunGroup], speeds: Mapping[str, Any], *,
                     digits: int = 1) -> dict[str, dict[str, Any]]:
    """Rows of a table of inference speed: group label -> ``ms / image`` (``mean ± std`` over
    the group's timed runs, in milliseconds; ``n/a`` when none of its runs was timed),
    ``timed runs`` (``k of n``) and ``measured on`` (the distinct settings of its timed runs,
    e.g. ``cpu, 1 thread, batch 2``: speeds compare only under the same one).

    ``speeds``: run name -> an object with ``seconds_per_image`` and ``setting`` (such as
    :class:`workbench.engine.timing.InferenceSpeed`), or ``None`` for a run without timing
    (written before it was recorded); runs missing from it count as untimed."""
    rows = {}
    for group in groups:
        timed = [speeds[name] for name in group.names if speeds.get(name) is not None]
        summary = MetricSummary(*mean_and_spread(1000.0 * s.seconds_per_image for s in timed))
        rows[group.label] = {
            SPEED_COLUMN: format_summary(summary, digits) or "n/a",
            "timed runs": f"{len(timed)} of {len(group.runs)}",
            "measured on": "; ".join(dict.fromkeys(s.setting for s in timed)) or "n/a",
        }
    return rows


def mean_curve(records_of_runs: Sequence[Sequence[Mapping[str, Any]]], *, kind: str = "eval", x: str = "epoch",
               y: str = "AP") -> tuple[list[Any], list[float], list[float | None]]:
    """``(x values, mean, sample std)`` of ``y`` over runs at each ``x`` of their ``kind``
    records (metrics.jsonl lines), the x values sorted; a run missing an x is left out there."""
    values: dict[Any, list[Any]] = {}
    for records in records_of_runs:
        for record in records:
            if record.get("kind") == kind and x in record and record.get(y) is not None:
                values.setdefault(record[x], []).append(record[y])
    xs = sorted(values)
    stats = [mean_and_spread(values[v]) for v in xs]
    return xs, [s[0] for s in stats], [s[1] for s in stats]


__all__ = [
    "MetricSummary",
    "RunGroup",
    "SPEED_COLUMN",
    "SUMMARY_KEYS",
    "format_summary",
    "group_runs",
    "group_table_rows",
    "mean_and_spread",
    "mean_curve",
    "reported_keys",
    "speed_table_rows",
    "summarize_group",
    "value_table_rows",
]
