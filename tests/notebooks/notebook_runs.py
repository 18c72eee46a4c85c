"""Executing the repository's notebooks in tests, and reading what they displayed."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import nbformat

from workbench.pipelines.runner import execute_notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TINY_DATA = "builtin:shapes?train=8&val=4&size=96"
#: A model small enough for 96-pixel images and a 1-epoch run on two busy cores.
TINY_MODEL = {
    "fpn_channels": 32, "min_size": 96, "max_size": 96, "box_representation_size": 64,
    "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100, "box_batch_size_per_image": 32,
}


def execute(name: str, folder: Path, **parameters: Any) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>.ipynb`` with papermill (kernel ``python3``: this interpreter) into
    ``folder`` as the pipelines do (:func:`workbench.pipelines.runner.execute_notebook`: no widget
    state saved) and return the executed notebook."""
    output = folder / f"{name}.ipynb"
    execute_notebook(NOTEBOOKS / f"{name}.ipynb", output, parameters)
    return nbformat.read(output, as_version=4)


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    """Every output of every code cell, in order."""
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def figures(nb: nbformat.NotebookNode) -> list[dict]:
    """The Plotly figures (``{"data": [...], "layout": {...}}``) the notebook displayed."""
    return [o["data"]["application/vnd.plotly.v1+json"] for o in outputs(nb)
            if "application/vnd.plotly.v1+json" in o.get("data", {})]


def widget_views(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for o in outputs(nb) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]


def errors(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for o in outputs(nb) if o.get("output_type") == "error"]


def layers(figure: dict) -> list[str]:
    """The ``meta["layer"]`` of each trace of a displayed figure (``None`` where unset)."""
    return [(trace.get("meta") or {}).get("layer") if isinstance(trace.get("meta"), dict) else None
            for trace in figure["data"]]


def title(figure: dict) -> str:
    text = figure["layout"].get("title", {})
    return text.get("text", "") if isinstance(text, dict) else str(text)


def assert_clean_and_thin(name: str, kernel: str | None = None) -> None:
    """``notebooks/<name>.ipynb`` is committed without outputs; its first code cell, and only
    that one, is the parameters cell and assigns literals; the other cells define nothing and
    import only from ``workbench``. With ``kernel``, its kernelspec is that one."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert code[0].metadata.get("tags") == ["parameters"]
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    if kernel is not None:
        assert nb.metadata["kernelspec"]["name"] == kernel
    for node in ast.parse(code[0].source).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)
    for cell in code[1:]:
        tree = ast.parse(cell.source)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        imports = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert all(m.startswith("workbench") for m in imports)
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import)]
