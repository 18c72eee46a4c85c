"""notebooks/libra.ipynb: committed clean and thin, and, without a run, shows the loss figure,
the sampling figure and the pyramid figure of a freshly built model."""

from __future__ import annotations

import ast

import nbformat
from notebook_runs import NOTEBOOKS, errors, execute, figures, layers, title


def test_committed_clean_and_thin():
    nb = nbformat.read(NOTEBOOKS / "libra.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert code[0].metadata.get("tags") == ["parameters"]
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    for node in ast.parse(code[0].source).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)
    for cell in code[1:]:
        tree = ast.parse(cell.source)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        imports = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert all(m.startswith("workbench") for m in imports)
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import)]


def test_without_a_run_shows_the_three_figures(notebook_env, tmp_path):
    nb = execute("libra", tmp_path, num_images=2, loss_settings=[[0.5, 1.5]], beta=1.0)
    assert not errors(nb)
    shown = figures(nb)
    (loss,) = [f for f in shown if title(f).startswith("balanced L1 and smooth L1")]
    assert layers(loss) == ["smooth L1 (beta 1)"] * 2 + ["balanced L1 (alpha 0.5, gamma 1.5)"] * 2
    (sampling,) = [f for f in shown if title(f).startswith("IoU of the box stage's negatives")]
    assert layers(sampling) == ["all negatives", "random sampling", "IoU-balanced sampling"]
    assert all("above 0.05" in trace["name"] for trace in sampling["data"])
    (levels,) = [f for f in shown if title(f).startswith("mean |activation| per level")]
    assert layers(levels) == ["before", "after"] and len(levels["data"][0]["x"]) == 4
