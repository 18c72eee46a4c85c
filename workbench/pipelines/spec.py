"""Pipeline files: which notebooks (and commands) to run, with which parameters, writing where.

A pipeline is a YAML file::

    name: demo                      # optional; defaults to the file's stem
    output: demo-output             # the output folder; `--out` overrides it
    parameters:                     # given to every notebook step (a step's own win)
      data: builtin:shapes
    steps:
      - name: train_baseline        # unique; names the executed notebook and the state entry
        notebook: ../notebooks/train.ipynb     # relative to this file's folder
        parameters: {method: faster_rcnn, out_dir: "{out}/runs/faster_rcnn"}
        output: "{out}/runs/faster_rcnn/notebooks/train.ipynb"  # default {out}/notebooks/<name>.ipynb
      - name: export
        command: [workbench, export, fiftyone, --run, "{out}/runs/faster_rcnn"]

Consecutive steps that name the same ``group`` are independent of each other and run at the
same time, each in its own kernel or process, with the CPU's threads shared out between them
(``OMP_NUM_THREADS``, unless it is set already); the next step starts once all of them
finished. Two training runs on a 2-core machine finish sooner side by side, one thread each,
than one after the other with two threads each.

A step has either ``notebook`` (run with papermill, the executed copy kept at ``output``) or
``command`` (a list of arguments; a leading ``workbench`` runs this interpreter's workbench).
``{out}`` in any string (parameters, outputs, command arguments; nested lists and dicts too) is
replaced by the absolute output folder, ``{pipeline_dir}`` by the pipeline file's folder.

Overrides given when the pipeline is loaded (``workbench pipeline run FILE -p epochs 2``) set a
parameter on every notebook step whose notebook declares it in its ``parameters`` cell.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

STEP_KEYS = {"name", "notebook", "command", "parameters", "output", "group"}
TOP_KEYS = {"name", "output", "parameters", "steps"}


class PipelineError(WorkbenchError):
    """A pipeline file is malformed, or one of its steps failed (the message names it)."""


@dataclass(frozen=True)
class Step:
    """One resolved step: a notebook (``notebook`` and ``output`` set) or a ``command``."""

    name: str
    notebook: Path | None = None
    output: Path | None = None
    command: tuple[str, ...] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Steps of one group run concurrently (see the module docstring); not part of the
    #: fingerprint, since it changes when a step runs, not what it computes.
    group: str | None = None

    @property
    def kind(self) -> str:
        return "notebook" if self.notebook is not None else "command"

    def fingerprint(self) -> str:
        """A hash of what the step runs: kind, notebook or command, parameters and output."""
        payload = {
            "kind": self.kind,
            "notebook": str(self.notebook) if self.notebook else None,
            "output": str(self.output) if self.output else None,
            "command": list(self.command) if self.command else None,
            "parameters": self.parameters,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pipeline:
    """A resolved pipeline: its name, source file, output folder and steps in order."""

    name: str
    source: Path
    out: Path
    steps: tuple[Step, ...]


def substitute(value: Any, names: dict[str, str]) -> Any:
    """Replace ``{name}`` placeholders of ``names`` in every string inside ``value``."""
    if isinstance(value, str):
        for key, replacement in names.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise PipelineError(f"{path}: no such pipeline file")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PipelineError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(document, dict):
        raise PipelineError(f"{path}: a pipeline file must be a mapping with a 'steps' list")
    unknown = set(document) - TOP_KEYS
    if unknown:
        raise PipelineError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    if not isinstance(document.get("steps"), list) or not document["steps"]:
        raise PipelineError(f"{path}: 'steps' must be a non-empty list")
    return document


def _check_step(path: Path, number: int, raw: Any, seen: set[str]) -> str:
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: step {number} must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise PipelineError(f"{path}: step {number} needs a 'name' (a string without '/')")
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise PipelineError(f"{path}: step '{name}': unknown keys {sorted(unknown)}; known: {sorted(STEP_KEYS)}")
    if name in seen:
        raise PipelineError(f"{path}: step name '{name}' is used twice")
    if ("notebook" in raw) == ("command" in raw):
        raise PipelineError(f"{path}: step '{name}' needs exactly one of 'notebook' or 'command'")
    if "parameters" in raw and not isinstance(raw["parameters"], dict):
        raise PipelineError(f"{path}: step '{name}': 'parameters' must be a mapping")
    if "command" in raw and (not isinstance(raw["command"], list) or not raw["command"]):
        raise PipelineError(f"{path}: step '{name}': 'command' must be a non-empty list of arguments")
    if "group" in raw and (not isinstance(raw["group"], str) or not raw["group"]):
        raise PipelineError(f"{path}: step '{name}': 'group' must be a non-empty string")
    return name


def _check_groups(path: Path, steps: list[Step]) -> None:
    """A group's steps stand next to each other (a step between them would have to run both
    before and after them)."""
    closed: set[str] = set()
    for previous, step in zip([None, *steps], steps):
        group = step.group
        if group is not None and group in closed and (previous is None or previous.group != group):
            raise PipelineError(
                f"{path}: step '{step.name}' is in group '{group}', but the group's earlier steps are not "
                "right before it; the steps of a group must be consecutive"
            )
        if group is not None:
            closed.add(group)


def _resolve_step(raw: dict[str, Any], shared: dict[str, Any], names: dict[str, str], base: Path, out: Path) -> Step:
    raw = substitute(raw, names)
    name = raw["name"]
    group = raw.get("group")
    if "command" in raw:
        return Step(name=name, command=tuple(str(a) for a in raw["command"]), group=group)
    notebook = Path(raw["notebook"])
    notebook = notebook if notebook.is_absolute() else (base / notebook)
    output = Path(raw.get("output") or out / "notebooks" / f"{name}.ipynb")
    parameters = {**shared, **raw.get("parameters", {})}
    return Step(name=name, notebook=notebook.resolve(), output=output.absolute(), parameters=parameters,
                group=group)


def notebook_parameters(path: Path) -> set[str]:
    """The names assigned in the notebook's cell tagged ``parameters`` (empty without one)."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for a bad file
        raise PipelineError(f"{path}: not a readable notebook ({exc.__class__.__name__}: {exc})") from None
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as exc:
                raise PipelineError(f"{path}: the parameters cell is not valid Python ({exc.msg})") from None
            return {t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
    return set()


def apply_overrides(steps: list[Step], overrides: dict[str, Any], source: Path) -> list[Step]:
    """Set each override on the notebook steps that declare it; an override no notebook
    declares is an error."""
    used: set[str] = set()
    out = []
    for step in steps:
        if step.notebook is None or not overrides:
            out.append(step)
            continue
        declared = notebook_parameters(step.notebook)
        mine = {k: v for k, v in overrides.items() if k in declared}
        used |= set(mine)
        out.append(dataclasses.replace(step, parameters={**step.parameters, **mine}))
    unused = sorted(set(overrides) - used)
    if unused:
        raise PipelineError(f"{source}: no notebook of this pipeline has the parameter(s) {', '.join(unused)}")
    return out


def load_pipeline(
    path: Path | str, out: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Pipeline:
    """Read and check a pipeline file; ``out`` overrides its ``output`` folder (default: a
    folder named after the pipeline in the current directory); ``overrides`` set notebook
    parameters (see the module docstring)."""
    path = Path(path)
    document = _read_yaml(path)
    name = str(document.get("name") or path.stem)
    out_dir = Path(out if out is not None else document.get("output") or name).absolute()
    base = path.parent.resolve()
    names = {"out": str(out_dir), "pipeline_dir": str(base)}
    shared = substitute(document.get("parameters") or {}, names)
    if not isinstance(shared, dict):
        raise PipelineError(f"{path}: 'parameters' must be a mapping")
    seen: set[str] = set()
    steps = []
    for number, raw in enumerate(document["steps"], start=1):
        seen.add(_check_step(path, number, raw, seen))
        steps.append(_resolve_step(raw, shared, names, base, out_dir))
    _check_groups(path, steps)
    for step in steps:
        if step.notebook is not None and not step.notebook.is_file():
            raise PipelineError(f"{path}: step '{step.name}': no such notebook {step.notebook}")
    steps = apply_overrides(steps, dict(overrides or {}), path)
    return Pipeline(name=name, source=path.resolve(), out=out_dir, steps=tuple(steps))


def parse_parameter(text: str) -> Any:
    """A command-line parameter value read as YAML (``2`` -> 2, ``[a, b]`` -> a list, ``x`` ->
    ``"x"``), like papermill's ``-y``."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
