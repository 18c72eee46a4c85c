"""Time ``workbench export fiftyone --run A --run B ...`` (:func:`workbench.export.fiftyone.export_runs`)
against the number of runs, optionally against an earlier revision of the workbench.

The runs are those of a comparison pipeline's output (``RUNS_ROOT/<method>/seed_<s>``, e.g.
``pipelines/compare_methods.yaml`` into ``/tmp/cmp_all``). Their ``config.json`` and traces are
copied into a temporary folder first (the export writes heatmap PNGs under each run), so the
inputs are only read. The first ``N`` runs are taken seed by seed (every method's seed 0, then
seed 1...), so a small ``N`` spans several methods. Each export goes into a new dataset of a
private ``mongod`` and runs in a child process (one thread), timed in wall seconds around
``export_runs`` alone (no interpreter start, no FiftyOne import). ``--before REV`` also times
the workbench of git revision ``REV`` (its ``workbench/`` extracted with ``git archive``) in the
same run, alternating with the working tree count by count; ``--before-counts`` limits which
counts it times. ``--profile DIR`` writes a cProfile of each export to ``DIR``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_export_runs.py --counts 6 12 36 \\
        --before HEAD~1 --before-counts 6 12
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ordered_runs(root: Path) -> list[Path]:
    """``root/<method>/seed_<s>`` with traces, seed by seed, methods in name order."""
    runs = [r for r in root.glob("*/seed_*") if (r / "traces").is_dir()]
    return sorted(runs, key=lambda r: (int(r.name.split("_")[-1]), r.parent.name))


def copy_runs(runs: list[Path], dest: Path) -> list[Path]:
    """Each run's ``config.json`` and ``traces/`` under ``dest/<method>/<seed dir>``."""
    copies = []
    for run in runs:
        copy = dest / run.parent.name / run.name
        copy.mkdir(parents=True)
        shutil.copy2(run / "config.json", copy / "config.json")
        shutil.copytree(run / "traces", copy / "traces")
        copies.append(copy)
    return copies


def extract_revision(rev: str, dest: Path) -> Path:
    """``workbench/`` of git revision ``rev`` under ``dest``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "workbench"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def worker(args) -> None:
    """Child process: one timed export; prints ``{"seconds": ...}``."""
    from workbench.export.database import import_fiftyone
    from workbench.export.fiftyone import export_runs

    import_fiftyone()
    runs = [Path(r) for r in args.worker_runs]
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    dataset, summary = export_runs(runs, name=args.worker_name, progress=False)
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(Path(args.profile) / f"{args.worker_name}.prof"))
    print(json.dumps({"seconds": seconds, "fields": len(dataset.get_field_schema(flat=True)),
                      "evaluations": len(dataset.list_evaluations()), "views": len(dataset.list_saved_views()),
                      "digest": export_digest(dataset)}))


def export_digest(dataset) -> str:
    """A hash of what an export wrote, alike for equal exports: every field's path, type and
    description, the evaluation keys, the saved views' names and stages and the label values
    (label ids, new on each export, and the dataset's name in heatmap paths left out)."""
    import hashlib

    schema = sorted((path, type(f).__name__, f.description) for path, f in dataset.get_field_schema(flat=True).items())
    views = [(n, str(dataset.load_saved_view(n)._serialize(include_uuids=False))) for n in dataset.list_saved_views()]
    values = [dataset.values(path) for path, kind, _ in schema
              if not path.endswith("id") and kind not in ("ObjectIdField", "EmbeddedDocumentField", "ListField")
              and path not in ("filepath", "created_at", "last_modified_at")]
    text = json.dumps([schema, dataset.list_evaluations(), views, values], default=str)
    text = text.replace(dataset.name, "<dataset>")  # heatmap paths name the dataset
    text = re.sub(r"\b[0-9a-f]{24}\b", "<id>", text)  # label ids, e.g. those in suppressed_by
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def timed_export(runs: list[Path], name: str, pythonpath: Path, uri: str, profile: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), FIFTYONE_DATABASE_URI=uri, OMP_NUM_THREADS="1",
               FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_DATABASE_VALIDATION="false",
               FIFTYONE_SHOW_PROGRESS_BARS="false")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-name", name, "--worker-runs", *map(str, runs)]
    if profile:
        cmd += ["--profile", profile]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=str(pythonpath))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-root", type=Path, default=Path("/tmp/cmp_all/runs"))
    parser.add_argument("--counts", type=int, nargs="+", default=[6, 12, 36])
    parser.add_argument("--before", help="a git revision to time as well")
    parser.add_argument("--before-counts", type=int, nargs="*", help="counts to time the revision at (default: all)")
    parser.add_argument("--profile", help="a folder for a cProfile of each export")
    parser.add_argument("--worker-name", help=argparse.SUPPRESS)
    parser.add_argument("--worker-runs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_name:
        return worker(args)
    runs = ordered_runs(args.runs_root)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    from workbench.export.database import start_private_mongod

    with tempfile.TemporaryDirectory(prefix="wb-bench-runs-") as tmp:
        tmp = Path(tmp)
        copies = copy_runs(runs[: max(args.counts)], tmp / "runs")
        variants = {"after": REPO}
        if args.before:
            (tmp / "before").mkdir()
            variants = {"before": extract_revision(args.before, tmp / "before"), **variants}
        mongod = start_private_mongod(tmp / "db")
        rows = []
        try:
            for count in args.counts:
                row = {"runs": count}
                for variant, path in variants.items():
                    if variant == "before" and args.before_counts is not None and count not in args.before_counts:
                        continue
                    result = timed_export(copies[:count], f"bench-{variant}-{count}", path, mongod.uri, args.profile)
                    row.update({variant: round(result["seconds"], 1), f"{variant} digest": result["digest"],
                                "fields": result["fields"],
                                "evaluations": result["evaluations"], "views": result["views"]})
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            mongod.stop()
    print("| runs | fields | evaluations | saved views | before (s) | after (s) | same export |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        same = "-" if "before" not in r else ("yes" if r["before digest"] == r["after digest"] else "NO")
        print(f"| {r['runs']} | {r['fields']} | {r['evaluations']} | {r['views']} | {r.get('before', '-')} "
              f"| {r['after']} | {same} |")


if __name__ == "__main__":
    main()
