"""`workbench export fiftyone` and the FiftyOne import behind it run quietly in an environment
that sets no FiftyOne variable: the workbench itself sets FiftyOne's quiet defaults (no database
version warning, no usage tracking) before it imports fiftyone, a user's own setting still wins,
and importing the workbench sets nothing and imports no fiftyone.

Only ``FIFTYONE_DATABASE_URI`` is passed on, to keep these processes on the tests' private
database."""

from __future__ import annotations

import os
import subprocess
import sys

NAME = "wb-quiet-test"
WARNING = "oldest supported"


def clean_env(uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    return {**env, "FIFTYONE_DATABASE_URI": uri, **extra}


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_export_prints_no_database_warning_without_fiftyone_settings(fiftyone_db, kl_run):
    result = subprocess.run(
        [sys.executable, "-m", "workbench", "export", "fiftyone", "--run", str(kl_run), "--name", NAME, "-q"],
        capture_output=True, text=True, timeout=600, env=clean_env(fiftyone_db),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"FiftyOne dataset '{NAME}'" in result.stdout
    assert WARNING not in result.stderr and WARNING not in result.stdout, result.stderr[-3000:]


CONNECT = (
    "import os, sys\n"
    "from workbench.export.database import import_fiftyone\n"
    "fo = import_fiftyone()\n"
    "fo.list_datasets()\n"
    "print(os.environ['FIFTYONE_DATABASE_VALIDATION'], os.environ['FIFTYONE_DO_NOT_TRACK'])\n"
)


def test_fiftyone_imported_by_the_workbench_connects_quietly(fiftyone_db):
    result = run_python(CONNECT, clean_env(fiftyone_db))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].split() == ["false", "true"]
    assert WARNING not in result.stderr + result.stdout, result.stderr[-3000:]


def test_a_users_own_setting_wins(fiftyone_db):
    result = run_python(CONNECT, clean_env(fiftyone_db, FIFTYONE_DATABASE_VALIDATION="true"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].split() == ["true", "true"]
    assert WARNING in result.stderr + result.stdout  # FiftyOne's own warning: the user asked for validation


def test_importing_the_workbench_sets_nothing_and_imports_no_fiftyone(fiftyone_db):
    code = (
        "import os, sys\n"
        "import workbench, workbench.cli, workbench.export, workbench.export.app, workbench.export.fiftyone\n"
        "assert 'fiftyone' not in sys.modules, 'fiftyone imported'\n"
        "print(sorted(k for k in os.environ if k.startswith('FIFTYONE_')))\n"
    )
    result = run_python(code, clean_env(fiftyone_db))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "['FIFTYONE_DATABASE_URI']"


def test_the_app_server_child_gets_the_defaults_without_overriding_the_user():
    from workbench.export.database import FIFTYONE_DEFAULTS, set_fiftyone_defaults

    env = set_fiftyone_defaults({"FIFTYONE_DO_NOT_TRACK": "false", "PATH": "/bin"})
    assert env == {"FIFTYONE_DO_NOT_TRACK": "false", "PATH": "/bin",
                   "FIFTYONE_DATABASE_VALIDATION": FIFTYONE_DEFAULTS["FIFTYONE_DATABASE_VALIDATION"]}
