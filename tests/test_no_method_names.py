"""Generic code knows no method: the FiftyOne export, the inspection package, the report and the
generic notebooks name no method. What a method records and how it is shown comes from its
declaration (``workbench.methods.Method.record_views``)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Every method of the papers and their baselines, registered or planned.
METHOD_NAMES = (
    "faster_rcnn", "kl_rpn", "refinedet", "iou_uniform", "libra", "yolov3", "uncertainty_rescaling",
    "cascade_rcnn", "retinanet", "ssd",
)
PATTERN = re.compile(r"\b(" + "|".join(METHOD_NAMES) + r")\b", re.IGNORECASE)
GENERIC_NOTEBOOKS = ("train", "inspect_proposals", "nms_decisions", "compare_runs")


def generic_sources() -> dict[str, str]:
    """Relative path -> text of every generic source (notebooks: all cells, markdown included)."""
    files = sorted((ROOT / "workbench" / "export").rglob("*.py")) + sorted((ROOT / "workbench" / "inspection").rglob("*.py"))
    files.append(ROOT / "workbench" / "report.py")
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in files}
    for name in GENERIC_NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        sources[str(path.relative_to(ROOT))] = "\n".join(cell.source for cell in nb.cells)
    return sources


def method_names_in(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line naming a method as a whole word."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if PATTERN.search(line)]


def test_the_pattern_finds_whole_words_only():
    assert method_names_in('if run.method == "kl_rpn":') == [(1, 'if run.method == "kl_rpn":')]
    assert method_names_in("x = 1\nSSD300 and ssd here\nRetinaNet") == [(2, "SSD300 and ssd here"), (3, "RetinaNet")]
    assert method_names_in("kl_rpn_sigma = unkl_rpn + faster_rcnnx + libraries + ssd_like") == []


def test_the_generic_sources_exist():
    sources = generic_sources()
    assert "workbench/export/fiftyone.py" in sources and "workbench/report.py" in sources
    assert any(p.startswith("workbench/inspection/") for p in sources)
    assert sum(p.startswith("notebooks/") for p in sources) == len(GENERIC_NOTEBOOKS)


@pytest.mark.parametrize("path", sorted(generic_sources()))
def test_generic_code_names_no_method(path):
    found = method_names_in(generic_sources()[path])
    assert not found, f"{path} names a method (declare it in the method's RecordView instead): {found}"
