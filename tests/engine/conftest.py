"""Small data so training tests take seconds on two cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.data.shapes import ShapesConfig, generate_shapes


@pytest.fixture(scope="session")
def small_shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes(root, ShapesConfig(num_train=8, num_val=4, image_size=96, seed=3), progress=False)
