"""The FiftyOne App on an exported dataset (``workbench app``).

The App server (``python -m fiftyone.server.main``) runs in a child process bound to
``127.0.0.1`` unless another address is asked for; :func:`serve_app` waits until it answers,
prints the dataset's URL and keeps serving until Ctrl-C, then stops the server. The child uses
the same FiftyOne database as this process (``FIFTYONE_DATABASE_URI`` when set).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from workbench.errors import WorkbenchError
from workbench.export.database import import_fiftyone, set_fiftyone_defaults

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5151


def dataset_url(name: str, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT) -> str:
    """The App page of dataset ``name``."""
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/datasets/{quote(name)}"


def resolve_dataset_name(name: str | None, run: str | Path | None, split: str | None) -> str:
    """``--name``, or the default export name of ``--run`` (and ``--split``, default the run's
    validation split)."""
    if (name is None) == (run is None):
        raise WorkbenchError("app takes either --name DATASET or --run RUN_DIR")
    if name is not None:
        return name
    from workbench.engine.trainer import load_run_config
    from workbench.export.fiftyone import default_dataset_name

    split = split or load_run_config(Path(run)).data.val_split
    return default_dataset_name(Path(run), split)


def check_dataset_exists(name: str) -> None:
    """Raise ``WorkbenchError`` naming the known datasets when ``name`` is not one of them."""
    fo = import_fiftyone()

    if not fo.dataset_exists(name):
        known = ", ".join(sorted(fo.list_datasets())) or "none"
        raise WorkbenchError(
            f"no FiftyOne dataset {name!r} (datasets: {known}); create it with `workbench export fiftyone --run RUN`"
        )


def start_server(address: str, port: int) -> subprocess.Popen:
    """The App server in a child process."""
    cmd = [sys.executable, "-m", "fiftyone.server.main", "--address", address, "--port", str(port)]
    env = set_fiftyone_defaults(dict(os.environ))
    return subprocess.Popen(cmd, env=env)


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers; raise ``WorkbenchError`` if the server exits or the time
    runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WorkbenchError(f"the FiftyOne App server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.25)
    raise WorkbenchError(f"the FiftyOne App server did not answer at {url} within {timeout:.0f} s")


def stop_server(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate the server (kill it if it does not stop within ``timeout``)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_app(
    name: str,
    *,
    address: str = DEFAULT_ADDRESS,
    port: int = DEFAULT_PORT,
    ready_timeout: float = 120.0,
    announce: Callable[[str], None] = print,
) -> int:
    """Serve the App on dataset ``name`` until Ctrl-C (or until the server exits); returns the
    exit code for the command line (0 after Ctrl-C)."""
    check_dataset_exists(name)
    with _interrupt_on_stop_signals():
        process = start_server(address, port)
        try:
            root = dataset_url(name, address, port).split("/datasets/")[0] + "/"
            wait_until_serving(root, process, ready_timeout)
            announce(f"FiftyOne App serving dataset {name!r} at {dataset_url(name, address, port)} (Ctrl-C to stop)")
            sys.stdout.flush()
            code = process.wait()
            if code != 0:
                raise WorkbenchError(f"the FiftyOne App server exited with code {code}")
            return 0
        except KeyboardInterrupt:
            return 0
        finally:
            stop_server(process)


@contextlib.contextmanager
def _interrupt_on_stop_signals():
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` meanwhile (also when the shell started the
    command with SIGINT ignored, as it does for background jobs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["DEFAULT_ADDRESS", "DEFAULT_PORT", "dataset_url", "resolve_dataset_name", "serve_app"]
