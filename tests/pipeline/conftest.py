"""Fixtures of the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_notebooks import LOG_BODY, write_notebook


@pytest.fixture
def notebooks(tmp_path) -> Path:
    """``log.ipynb``: appends ``step`` and the kernel's interpreter to ``log_file`` (and raises
    ``ValueError`` while the file ``fail_if_exists`` exists)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "log.ipynb", 'step = "?"\nlog_file = "log.txt"\nfail_if_exists = ""', LOG_BODY)
    return folder
