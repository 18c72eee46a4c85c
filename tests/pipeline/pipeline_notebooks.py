"""Tiny notebooks for the pipeline tests: one parameters cell and one code cell."""

from __future__ import annotations

from pathlib import Path

import nbformat


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
