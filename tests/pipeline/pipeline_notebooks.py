"""Tiny notebooks for the pipeline tests (one parameters cell and one code cell), and what the
tests of the comparison pipelines read from a loaded pipeline."""

from __future__ import annotations

from pathlib import Path

import nbformat

from workbench.pipelines.spec import Pipeline, Step, notebook_parameters


def write_notebook(path: Path, parameters: str, body: str) -> Path:
    """A notebook with a ``parameters``-tagged cell and one code cell."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


LOG_BODY = """
import os, sys
from pathlib import Path
if Path(fail_if_exists).name and Path(fail_if_exists).exists():
    raise ValueError(f"broken on purpose in {step}")
with open(log_file, "a") as f:
    f.write(f"{step} {sys.executable}\\n")
"""


def log_lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def trained_rows(pipeline: Pipeline) -> dict[str, Step]:
    """A comparison pipeline's training steps by row: step ``train_<row>`` under ``<row>``."""
    return {s.name[len("train_"):]: s for s in pipeline.steps if s.name.startswith("train_")}


def undefined_notebook_parameters(pipeline: Pipeline) -> dict[str, set[str]]:
    """Per notebook step, the parameters it passes that its notebook does not define; only the
    steps with some (papermill would inject them unused, so a typo would go unnoticed)."""
    undefined = {s.name: set(s.parameters) - notebook_parameters(s.notebook)
                 for s in pipeline.steps if s.kind == "notebook"}
    return {name: names for name, names in undefined.items() if names}
