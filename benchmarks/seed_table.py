"""What the comparison scripts share: the AP of a run's last evaluation, and the markdown table
of each row's mean ± sample std over its seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def final_eval(run_dir: Path, keys: tuple[str, ...]) -> dict[str, float]:
    """The ``keys`` of the evaluation after the run's last epoch (those it wrote, not null)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    last = [r for r in records if r.get("kind") == "eval"][-1]
    return {k: last[k] for k in keys if last.get(k) is not None}


def mean_spread(values: list[float]) -> str:
    """``mean ± sample std`` to 4 places; the value alone for one seed, ``-`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def ap_table_lines(results: dict[str, list[dict]], keys: tuple[str, ...]) -> list[str]:
    """Markdown lines: a row per entry of ``results`` (row -> one dict per seed) with its seed
    count and ``mean_spread`` of each key over the seeds that have it."""
    lines = ["| row | seeds | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for row, evals in results.items():
        cells = [mean_spread([e[k] for e in evals if k in e]) for k in keys]
        lines.append(f"| {row} | {len(evals)} | " + " | ".join(cells) + " |")
    return lines
