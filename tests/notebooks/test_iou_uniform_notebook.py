"""notebooks/iou_uniform.ipynb: committed clean and thin, and, without runs, shows the IoU
figures of a freshly built model and baseline."""

from __future__ import annotations

import ast

import nbformat
from notebook_runs import NOTEBOOKS, errors, execute, figures, layers, title


def test_committed_clean_and_thin():
    nb = nbformat.read(NOTEBOOKS / "iou_uniform.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert code[0].metadata.get("tags") == ["parameters"]
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for node in ast.parse(code[0].source).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)
    for cell in code[1:]:
        tree = ast.parse(cell.source)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        imports = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert all(m.startswith("workbench") for m in imports)
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import)]


def test_without_runs_shows_the_four_figures(notebook_env, tmp_path):
    nb = execute("iou_uniform", tmp_path, num_images=2)
    assert not errors(nb)
    shown = figures(nb)
    (histogram,) = [f for f in shown if title(f).startswith("IoU of the boxes")]
    assert layers(histogram) == ["RPN proposals", "generated samples", "refined RoIs", "refined RoIs, baseline"]
    (gain,) = [f for f in shown if title(f).startswith("Localisation gain")]
    assert layers(gain) == ["freshly built iou_uniform (untrained)", "freshly built faster_rcnn (untrained)"]
    (correlation,) = [f for f in shown if title(f).startswith("Predicted against true IoU")]
    assert {"first prediction (proposal features)", "after re-pooling the refined box"} <= set(layers(correlation))
    (recall,) = [f for f in shown if title(f).startswith("Recall against the matching IoU")]
    assert layers(recall) == ["NMS by class x IoU", "NMS by class score",
                              "baseline (freshly built faster_rcnn (untrained))"]
    assert not [f for f in shown if title(f).startswith("AP per IoU")]
