"""J5: exports and the App go to a shared MongoDB named by ``FIFTYONE_DATABASE_URI``. A second
``mongod`` on another port stands in for the shared server: ``workbench export fiftyone`` run with
its URI writes the dataset there (and not into the tests' own database), and a second process
pointed at it, as the App's server would be, finds it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from workbench.export.database import start_private_mongod

NAME = "wb-shared-db"


@pytest.fixture
def shared_mongod(fiftyone_db):
    db_dir = Path(tempfile.mkdtemp(prefix="wb-shared-mongod-"))
    mongod = start_private_mongod(db_dir)
    try:
        yield mongod
    finally:
        mongod.stop()
        shutil.rmtree(db_dir, ignore_errors=True)


def _run(args: list[str], uri: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, FIFTYONE_DATABASE_URI=uri)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_an_export_goes_to_the_database_the_uri_names(shared_mongod, fiftyone_db, kl_run):
    import fiftyone as fo

    assert shared_mongod.uri != fiftyone_db
    exported = _run(["-m", "workbench", "export", "fiftyone", "--run", str(kl_run), "--name", NAME, "-q"],
                    shared_mongod.uri)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert NAME in exported.stdout
    check = _run(["-c", "import fiftyone as fo; d = fo.load_dataset(%r); "
                        "print(len(d), d.list_evaluations(), sorted(d.get_field_schema()))" % NAME],
                 shared_mongod.uri, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.startswith("4 ['eval']") and "'predictions'" in check.stdout
    assert NAME not in fo.list_datasets()  # the tests' own database did not receive it
