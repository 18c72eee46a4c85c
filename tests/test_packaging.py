"""The three places that name the stack agree: pyproject.toml (ranges), constraints.txt (the
exact pins `make setup` installs) and environment.yml (the conda route)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_requirements() -> dict[str, Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return {_canon(r.name): r for r in map(Requirement, reqs)}


def _environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for line in pip_section:
        name, version = line.split("==")
        pins[_canon(name)] = version
    return pins


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[_canon(name)] = version.strip()
    return pins


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert set(_environment_pins()) == set(_pyproject_requirements())


def test_environment_yml_pins_are_the_constraints_pins_and_fit_pyproject_ranges():
    constraints = _constraints()
    requirements = _pyproject_requirements()
    for name, version in _environment_pins().items():
        assert constraints.get(name) == version, f"{name}: environment.yml {version}, constraints {constraints.get(name)}"
        assert requirements[name].specifier.contains(version), f"{name}=={version} outside {requirements[name]}"


def test_environment_yml_python_matches_the_venv_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"
    assert sys.version_info[:2] == (3, 11)


def test_installed_versions_are_the_pins():
    from importlib.metadata import version

    for name, pinned in _environment_pins().items():
        assert version(name) == pinned, name


def test_import_starts_nothing():
    code = (
        "import sys, workbench, workbench.ops, workbench.cli\n"
        "heavy = [m for m in ('fiftyone', 'plotly', 'papermill', 'pycocotools') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_console_script_is_installed():
    out = subprocess.run([Path(sys.executable).parent / "workbench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "evaluate" in out.stdout
