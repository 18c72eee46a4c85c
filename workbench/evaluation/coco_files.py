"""Reading and checking COCO ground-truth and results files before pycocotools sees them.

pycocotools trusts its input: a malformed file ends in an ``AssertionError``, a ``KeyError`` or,
worse, in quietly wrong numbers (a duplicate annotation id overwrites another). Everything is
checked here first, and every problem becomes one ``WorkbenchError`` that names the file, the
index of the first bad entry and how many entries are bad:

- ground truth -> ``DatasetError``;
- results (predictions) -> ``PredictionFileError``.

COCO conventions: ids are integers; ``bbox`` is ``[x, y, width, height]`` in pixels with
``(x, y)`` the top-left corner. A ground-truth annotation without ``area`` gets ``width *
height`` (the area that decides small / medium / large) and one without ``iscrowd`` gets ``0``;
everything else pycocotools needs must be present.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from workbench.errors import DatasetError, PredictionFileError, WorkbenchError

RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def quiet_unless(verbose: bool) -> contextlib.AbstractContextManager:
    """A context that swallows pycocotools' progress prints unless ``verbose``."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``object``, ``array``, ``string`` ...)."""
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _id_problem(entry: Mapping, key: str) -> str | None:
    if not _is_int(entry[key]):
        return f"'{key}' must be an integer, got {_short(entry[key])}"
    return None


def _unknown_id_problem(entry: Mapping, key: str, known: set, what: str) -> str | None:
    """``entry[key]`` not among the ``known`` ids: ``'<key>' <id> <what>``."""
    if entry[key] in known:
        return None
    return f"'{key}' {entry[key]} {what}"


def _number_problem(entry: Mapping, key: str) -> str | None:
    value = entry[key]
    if not _is_number(value):
        return f"'{key}' must be a number, got {_short(value)}"
    if not math.isfinite(value):
        return f"'{key}' is not finite ({value})"
    return None


def bbox_problem(bbox: Any) -> str | None:
    """What is wrong with a COCO ``[x, y, width, height]``, or ``None`` when it is fine."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f"'bbox' must be a list of 4 numbers [x, y, width, height], got {_short(bbox)}"
    if not all(math.isfinite(v) for v in bbox):
        return f"'bbox' has a non-finite value: {bbox}"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"'bbox' has a negative width or height: {bbox}"
    return None


def _first_problem(checks: list[Callable[[], str | None]]) -> str | None:
    for check in checks:
        problem = check()
        if problem is not None:
            return problem
    return None


def _missing_keys_problem(entry: Any, keys: tuple[str, ...]) -> str | None:
    if not isinstance(entry, dict):
        return f"must be a JSON object, got {json_type(entry)} {_short(entry)}"
    missing = [k for k in keys if k not in entry]
    if missing:
        return "missing " + ", ".join(f"'{k}'" for k in missing)
    return None


def _summarize_problems(problems: list[tuple[int, str]], total: int, what: str) -> str | None:
    """One sentence naming how many ``what`` are bad and the first one, or ``None``."""
    if not problems:
        return None
    index, reason = problems[0]
    return f"{len(problems)} of {total} {what} are bad; the first is at index {index}: {reason}"


def read_json(path: Path, make_error: Callable[[str], WorkbenchError], what: str) -> Any:
    """Parse a JSON file; any failure to open, decode or parse becomes ``make_error``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise make_error(f"{what} file not found") from None
    except IsADirectoryError:
        raise make_error(f"{what} path is a directory, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise make_error(f"cannot read the {what} file: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise make_error(f"{what} file is not valid JSON: {exc}") from None


# ----------------------------------------------------------------------------- ground truth


def _unique_int_ids(entries: list, key: str) -> list[tuple[int, str]]:
    """Problems of a list of objects that must each carry a unique integer ``key``."""
    problems, seen = [], set()
    for index, entry in enumerate(entries):
        problem = _missing_keys_problem(entry, (key,)) or _id_problem(entry, key)
        if problem is None and entry[key] in seen:
            problem = f"duplicate '{key}' {entry[key]}"
        if problem is None:
            seen.add(entry[key])
        else:
            problems.append((index, problem))
    return problems


def _gt_annotation_problem(ann: Any, image_ids: set, category_ids: set) -> str | None:
    return _first_problem(
        [
            lambda: _missing_keys_problem(ann, ("id", "image_id", "category_id", "bbox")),
            lambda: _id_problem(ann, "image_id"),
            lambda: _id_problem(ann, "category_id"),
            lambda: bbox_problem(ann["bbox"]),
            lambda: _number_problem(ann, "area") if "area" in ann else None,
            lambda: "'area' is negative" if ann.get("area", 0) < 0 else None,
            lambda: (
                f"'iscrowd' must be 0 or 1, got {_short(ann['iscrowd'])}"
                if "iscrowd" in ann and ann["iscrowd"] not in (0, 1)
                else None
            ),
            lambda: _unknown_id_problem(ann, "image_id", image_ids, "is not in 'images'"),
            lambda: _unknown_id_problem(ann, "category_id", category_ids, "is not in 'categories'"),
        ]
    )


def _gt_problem(dataset: Any) -> str | None:
    """The first problem of a COCO ground-truth object, or ``None`` when it is usable."""
    if not isinstance(dataset, dict):
        return f"a COCO ground truth must be a JSON object, got {json_type(dataset)}"
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            return f"a COCO ground truth needs a list '{key}'"
    for key, what in (("images", "images"), ("categories", "categories")):
        problem = _summarize_problems(_unique_int_ids(dataset[key], "id"), len(dataset[key]), what)
        if problem:
            return problem
    annotations = dataset["annotations"]
    problems = _unique_int_ids(annotations, "id")
    bad = {index for index, _ in problems}
    image_ids = {image["id"] for image in dataset["images"]}
    category_ids = {category["id"] for category in dataset["categories"]}
    for index, ann in enumerate(annotations):
        if index not in bad:
            problem = _gt_annotation_problem(ann, image_ids, category_ids)
            if problem:
                problems.append((index, problem))
    problems.sort()
    return _summarize_problems(problems, len(annotations), "annotations")


def _with_defaults(annotation: dict) -> dict:
    """A copy of a ground-truth annotation with ``area`` and ``iscrowd`` filled in."""
    ann = dict(annotation)
    ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
    ann.setdefault("iscrowd", 0)
    return ann


def coco_gt_from_dict(
    dataset: Any, *, source: str | Path = "ground truth", verbose: bool = False
) -> COCO:
    """Check a COCO ground-truth object and index it as a pycocotools ``COCO``.

    ``dataset`` is not modified. Raises ``DatasetError`` naming ``source``.
    """
    problem = _gt_problem(dataset)
    if problem:
        raise DatasetError(problem, path=source)
    data = dict(dataset)
    data["images"] = list(dataset["images"])
    data["categories"] = copy.deepcopy(dataset["categories"])
    data["annotations"] = [_with_defaults(ann) for ann in dataset["annotations"]]
    coco = COCO()
    coco.dataset = data
    with quiet_unless(verbose):
        coco.createIndex()
    return coco


def load_coco_gt(path: str | Path, *, verbose: bool = False) -> COCO:
    """Read, check and index a COCO ground-truth JSON file; ``DatasetError`` names the file."""
    path = Path(path)
    dataset = read_json(path, lambda message: DatasetError(message, path=path), "ground-truth")
    return coco_gt_from_dict(dataset, source=path, verbose=verbose)


# ----------------------------------------------------------------------------- results


def _result_problem(entry: Any, image_ids: set, category_ids: set) -> str | None:
    return _first_problem(
        [
            lambda: _missing_keys_problem(entry, RESULT_KEYS),
            lambda: _id_problem(entry, "image_id"),
            lambda: _id_problem(entry, "category_id"),
            lambda: bbox_problem(entry["bbox"]),
            lambda: _number_problem(entry, "score"),
            lambda: _unknown_id_problem(entry, "image_id", image_ids, "is not an image of the ground truth"),
            lambda: _unknown_id_problem(entry, "category_id", category_ids, "is not a category of the ground truth"),
        ]
    )


def validate_results(results: Any, coco_gt: COCO, *, source: str | Path = "results") -> list[dict]:
    """Check COCO results entries against their ground truth; return clean copies.

    Each copy holds only ``image_id``, ``category_id``, ``bbox`` (a new list) and ``score``,
    in the original order (pycocotools breaks score ties by that order), so pycocotools'
    in-place edits never reach the caller's objects. Raises ``PredictionFileError`` that
    names ``source``, the index of the first bad entry and the number of bad entries.
    """
    if not isinstance(results, list):
        hint = ""
        if isinstance(results, dict) and "annotations" in results:
            hint = " (this looks like a ground-truth file)"
        raise PredictionFileError(
            f"{source}: a COCO results file must hold a JSON list of detections, "
            f"got a JSON {json_type(results)}{hint}"
        )
    image_ids = set(coco_gt.getImgIds())
    category_ids = set(coco_gt.getCatIds())
    problems = []
    for index, entry in enumerate(results):
        problem = _result_problem(entry, image_ids, category_ids)
        if problem:
            problems.append((index, problem))
    summary = _summarize_problems(problems, len(results), "detections")
    if summary:
        raise PredictionFileError(f"{source}: {summary}")
    return [
        {
            "image_id": entry["image_id"],
            "category_id": entry["category_id"],
            "bbox": list(entry["bbox"]),
            "score": entry["score"],
        }
        for entry in results
    ]


def load_results(path: str | Path, coco_gt: COCO) -> list[dict]:
    """Read and check a COCO results JSON file; ``PredictionFileError`` names the file."""
    path = Path(path)
    results = read_json(path, lambda message: PredictionFileError(f"{path}: {message}"), "results")
    return validate_results(results, coco_gt, source=path)
