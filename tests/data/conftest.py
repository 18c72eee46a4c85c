"""Fixtures of the data tests (builders in ``data_builders``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_builders import PROPERTY_CONFIG
from detector_support import one_thread_per_test  # noqa: F401 (autouse: one thread for each test here)

from workbench.data.shapes import generate_shapes


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A generated shapes dataset of ``PROPERTY_CONFIG``, shared by the tests of a session."""
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes(root, PROPERTY_CONFIG, progress=False, workers=0)
