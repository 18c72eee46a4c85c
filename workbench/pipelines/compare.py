"""The comparison pipeline: chosen methods' ``tiny`` presets and their baselines over a list of
seeds, exported into one FiftyOne dataset, compared in ``notebooks/compare_runs.ipynb`` and an
HTML report.

Pipeline files are static YAML; this module writes one for a choice of methods and seeds
(``workbench pipeline compare``), e.g.::

    workbench pipeline compare --method kl_rpn --method libra_rcnn --seed 0 --seed 1 \\
        --file my_compare.yaml
    workbench pipeline run my_compare.yaml [-p epochs 2]

``pipelines/compare_methods.yaml`` is this module's output for every registered method and
seeds 0, 1, 2. Every method brings its baseline (:attr:`workbench.methods.Method.baseline`,
followed to the end of the chain), trained over the same seeds.

Steps, in order: the dataset check; the training runs (``notebooks/train.ipynb``, whose
evaluation pass also predicts with traces) in groups of ``concurrent`` that run side by side
(see :mod:`workbench.pipelines.spec`); one FiftyOne dataset of every run (``workbench export
fiftyone --run ... --name NAME``); the comparison notebook; the report. Run folders are
``{out}/runs/<method>/seed_<seed>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from workbench.atomic import write_text_atomic
from workbench.errors import ConfigError

DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
PRESET = "tiny"
#: The notebooks folder of this checkout, and the committed pipeline.
NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
COMPARE_PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "compare_methods.yaml"


def with_baselines(methods: Sequence[str]) -> list[str]:
    """The methods and the baselines they are compared against (followed to the end of the
    chain), each once: every baseline before the methods built on it, otherwise in the order
    given."""
    from workbench.methods import METHODS, get_method

    ordered: list[str] = []

    def add(name: str, chain: tuple[str, ...] = ()) -> None:
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
        if name in chain:
            raise ConfigError(f"the baselines of {name!r} form a cycle: {' -> '.join((*chain, name))}")
        baseline = get_method(name).baseline
        if baseline is not None:
            add(baseline, (*chain, name))
        if name not in ordered:
            ordered.append(name)

    for name in methods:
        add(name)
    for name in ordered:
        if PRESET not in get_method(name).presets:
            raise ConfigError(f"method {name!r} has no {PRESET!r} preset")
    return ordered


def run_dir(method: str, seed: int) -> str:
    return f"{{out}}/runs/{method}/seed_{seed}"


def compare_pipeline(
    methods: Sequence[str], seeds: Sequence[int] = DEFAULT_SEEDS, *, name: str = "compare_methods",
    output: str = "compare-output", concurrent: int = 2, data: str = "builtin:shapes", max_images: int = 50,
    notebooks: str = "../notebooks",
) -> dict[str, Any]:
    """The pipeline document (see the module docstring) for ``methods`` (their baselines added)
    over ``seeds``; ``concurrent`` training runs side by side; ``notebooks``: the notebooks
    folder relative to the pipeline file's folder."""
    if not methods:
        raise ConfigError("choose at least one method")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be a non-empty list without repeats, not {list(seeds)}")
    if concurrent < 1:
        raise ConfigError("concurrent must be at least 1")
    names = with_baselines(methods)
    runs = [(method, int(seed)) for seed in seeds for method in names]
    steps: list[dict[str, Any]] = [{"name": "data", "command": ["workbench", "data", "check", data, "-q"]}]
    for i, (method, seed) in enumerate(runs):
        step: dict[str, Any] = {
            "name": f"train_{method}_seed_{seed}",
            "notebook": f"{notebooks}/train.ipynb",
            "parameters": {"method": method, "preset": PRESET, "data": data, "seed": seed,
                           "out_dir": run_dir(method, seed), "trace": True},
            "output": f"{run_dir(method, seed)}/notebooks/train.ipynb",
        }
        if concurrent > 1:
            step["group"] = f"train_{i // concurrent + 1}"
        steps.append(step)
    dirs = [run_dir(method, seed) for method, seed in runs]
    export: list[str] = ["workbench", "export", "fiftyone"]
    for path in dirs:
        export += ["--run", path]
    steps.append({"name": "export", "command": [*export, "--name", name, "-q"]})
    steps.append({"name": "compare_runs", "notebook": f"{notebooks}/compare_runs.ipynb",
                  "parameters": {"run_dirs": dirs, "max_images": max_images},
                  "output": "{out}/notebooks/compare_runs.ipynb"})
    report: list[str] = ["workbench", "report"]
    for path in dirs:
        report += ["--run", path]
    steps.append({"name": "report", "command": [*report, "--max-images", str(max_images), "--out",
                                                "{out}/report.html"]})
    return {"name": name, "output": output, "parameters": {"device": "auto"}, "steps": steps}


HEADER = """\
# The comparison pipeline: each chosen method's `tiny` preset and its baseline, trained over the
# seeds below by the train notebook (its evaluation pass predicts with traces), exported into
# one FiftyOne dataset, compared by notebooks/compare_runs.ipynb (metrics as mean and spread
# over seeds per method, AP against IoU threshold, training curves) and an HTML report.
#
#   workbench pipeline run {file} [--out DIR] [-p epochs 2]
#
# Written by `workbench pipeline compare` ({seeds_text}). Methods and their baselines:
{methods}
# Choose other methods, seeds or more runs side by side with it rather than editing the lists
# by hand (after a method is registered, write this file again the same way):
#
#   workbench pipeline compare --method kl_rpn --method libra_rcnn --seed 0 --seed 1 --file my.yaml
#
# `-p epochs N` reaches every training run; do not pass `-p seed`, which would give every run
# the same seed. Runs are {{out}}/runs/<method>/seed_<seed>; the FiftyOne dataset is named
# `{name}` (`workbench app --name {name}`).
"""


def render(document: dict[str, Any], *, file: str, methods: Sequence[str], seeds: Sequence[int]) -> str:
    """The pipeline document as YAML under a header that says how it was made and how to run it."""
    import textwrap

    trained = list(dict.fromkeys(step["parameters"]["method"] for step in document["steps"]
                                 if str(step.get("notebook", "")).endswith("train.ipynb")))
    lines = textwrap.wrap(", ".join(trained), width=94, break_on_hyphens=False)
    header = HEADER.format(file=file, methods="\n".join(f"#   {line}" for line in lines),
                           seeds_text=f"seeds {', '.join(map(str, seeds))}", name=document["name"])
    body = yaml.safe_dump(document, sort_keys=False, width=120, default_flow_style=None)
    return header + body


def write_compare_pipeline(path: Path | str, methods: Sequence[str], seeds: Sequence[int] = DEFAULT_SEEDS,
                           **options: Any) -> Path:
    """Write :func:`compare_pipeline` to ``path``, naming this checkout's notebooks relative to
    the file's folder."""
    import os

    path = Path(path)
    notebooks = Path(os.path.relpath(NOTEBOOKS_DIR, path.absolute().parent)).as_posix()
    document = compare_pipeline(methods, seeds, notebooks=notebooks, **options)
    return write_text_atomic(path, render(document, file=str(path), methods=methods, seeds=seeds))


__all__ = ["COMPARE_PIPELINE", "DEFAULT_SEEDS", "NOTEBOOKS_DIR", "compare_pipeline", "render", "with_baselines", "write_compare_pipeline"]
