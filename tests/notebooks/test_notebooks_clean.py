"""The committed notebooks are thin: no outputs, one parameters cell first, no definitions."""

from __future__ import annotations

import ast

import nbformat
import pytest
from notebook_runs import NOTEBOOKS

NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_clean_and_thin(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in code:
        tree = ast.parse(cell.source)
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defined, f"{name}: logic belongs in the library, not in a notebook cell"
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        modules = [n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in imports]
        assert all(m == "pathlib" or m.startswith("workbench") for m in modules), modules


def test_parameters_cell_only_assigns_literals():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        tree = ast.parse(nb.cells[[c.cell_type for c in nb.cells].index("code")].source)
        for node in tree.body:
            assert isinstance(node, ast.Assign)
            ast.literal_eval(node.value)


@pytest.mark.parametrize("name", NAMES)
def test_papermill_reads_every_parameter(name, caplog):
    """papermill's own reading of the parameters cell (``papermill --help-notebook``, the
    pipelines' parameter check) finds every name the cell assigns, without a warning: it gives
    up on a line with two ``=``, even inside a string."""
    import papermill

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    tree = ast.parse(nb.cells[[c.cell_type for c in nb.cells].index("code")].source)
    assigned = [target.id for node in tree.body for target in node.targets]
    with caplog.at_level("WARNING", logger="papermill"):
        inspected = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    assert list(inspected) == assigned
    assert not [r for r in caplog.records if r.name.startswith("papermill")], caplog.text
