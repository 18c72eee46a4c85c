"""One tiny KL-RPN run trained through the train notebook, shared by the notebook tests, and a
tiny baseline run trained directly for the comparison."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import TINY_DATA, TINY_MODEL, execute


@pytest.fixture(scope="session")
def notebook_env(tmp_path_factory):
    """A private dataset cache for this session (the kernels inherit the environment)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("WORKBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    patch.setenv("FIFTYONE_DO_NOT_TRACK", "true")
    yield
    patch.undo()


@pytest.fixture(scope="session")
def trained(notebook_env, tmp_path_factory):
    """``(run_dir, executed train notebook)`` of KL-RPN trained for one epoch by train.ipynb,
    without traces (the inspection notebooks predict them)."""
    root = tmp_path_factory.mktemp("train")
    run_dir = root / "runs" / "kl_rpn"
    nb = execute(
        "train", root, method="kl_rpn", preset="tiny", data=TINY_DATA, epochs=1, batch_size=2, device="cpu",
        seed=3, out_dir=str(run_dir), model_overrides=TINY_MODEL, trace=False,
    )
    return run_dir, nb


@pytest.fixture(scope="session")
def baseline_run(notebook_env, tmp_path_factory) -> Path:
    """A Faster R-CNN run of the same size, trained in this process."""
    from workbench.engine.trainer import train
    from workbench.pipelines.params import train_config

    run_dir = tmp_path_factory.mktemp("baseline") / "faster_rcnn"
    cfg = train_config("faster_rcnn", "tiny", data=TINY_DATA, epochs=1, batch_size=2, device="cpu", seed=3,
                       model_overrides=TINY_MODEL)
    train(cfg, run_dir, progress=False)
    return run_dir
