"""Fixtures of the data tests (builders in ``data_builders``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_builders import PROPERTY_CONFIG

from workbench.data.shapes import generate_shapes


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A generated shapes dataset of ``PROPERTY_CONFIG``, shared by the tests of a session."""
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes(root, PROPERTY_CONFIG, progress=False, workers=0)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: threads only add contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
