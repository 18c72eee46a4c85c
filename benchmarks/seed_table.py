"""What the comparison scripts share: the grid of rows x seeds, the AP of a run's last
evaluation, and the markdown table of each row's mean ± sample std over its seeds."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Callable

import torch


def comparison_parser(
    description: str,
    *,
    rows: list[str],
    default_rows: list[str],
    out: str,
    rows_flag: str = "--rows",
    rows_help: str | None = None,
    epochs_help: str = "override the presets' epochs",
) -> argparse.ArgumentParser:
    """The arguments every comparison takes: ``--data``, ``--epochs``, ``--seeds``, the rows to
    compare (``rows_flag``, read into ``args.rows``, choices ``rows``), ``--out`` and
    ``--threads``; the script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--epochs", type=int, default=None, help=epochs_help)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(rows_flag, dest="rows", nargs="+", default=list(default_rows), choices=list(rows),
                        help=rows_help)
    parser.add_argument("--out", default=out)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return parser


def over_seeds(args: argparse.Namespace, measure: Callable[[str, int], dict]) -> dict[str, list[dict]]:
    """``measure(row, seed)`` of every row of ``args.rows`` for every seed of ``args.seeds`` (seed
    by seed), with INFO logging and ``args.threads`` intra-op threads (when given): row -> one
    result per seed. Prints the line that names the data, epochs and seeds of the table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results: dict[str, list[dict]] = {row: [] for row in args.rows}
    for seed in args.seeds:
        for row in args.rows:
            results[row].append(measure(row, seed))
    print(f"\ndata {args.data}, epochs {args.epochs or 'preset'}, seeds {args.seeds}; mean ± sample std\n")
    return results


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
