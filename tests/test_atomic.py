"""Atomic text writes: the old content or the whole new one, never a half-written file."""

from __future__ import annotations

import pytest

from workbench.atomic import write_text_atomic


def test_writes_creating_parents_and_replaces(tmp_path):
    path = write_text_atomic(tmp_path / "a" / "b" / "state.json", "first\n")
    assert path.read_text() == "first\n"
    write_text_atomic(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "report.html", "old")
    with pytest.raises(TypeError):
        write_text_atomic(path, b"not text")  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
