"""Turn a dataset spec (a string on the command line or in a notebook) into a dataset.

Specs ``open_dataset(spec, split)`` accepts:

``builtin:shapes``
    The built-in shapes dataset (1000 train / 200 val images, 256 px, seed 0), generated into
    the cache on first use. Options after ``?``: ``builtin:shapes?train=200&val=50&size=128&seed=1``.
``DIR`` with ``DIR/annotations/instances_<split>.json`` (a COCO root)
    Images in ``DIR/<split>/``. COCO 2017 works as is with ``split="train2017"``.
``FILE.json`` (one COCO annotation file)
    ``split`` is not needed to find the annotations. Images are in ``image_dir`` when given
    (``--images`` on the command line); otherwise in the first of these folders that holds the
    first image's ``file_name``: ``<json folder>/<split>``, ``<json folder>/<json stem>``,
    ``<json folder>/../<split>`` and ``<json folder>/../<stem without "instances_">`` (a COCO
    root), ``<json folder>/images``, ``<json folder>/data``, ``<json folder>``.
``DIR`` with ``DIR/Annotations/``, ``DIR/JPEGImages/`` and ``DIR/ImageSets/Main/<split>.txt``
    A Pascal VOC root such as ``VOCdevkit/VOC2007``.
``DIR`` with ``DIR/<split>.json`` (one COCO JSON file per split)
    Images found as for a lone COCO JSON file (``DIR/<split>/``, ``DIR/images/``, ...): a folder
    holding ``images/``, ``train.json`` and ``val.json`` works as it is.
``FILE.yaml`` (a dataset file naming one COCO JSON file per split)
    ``train: {annotations: train.json, images: images}`` and ``val: {...}``; a top-level
    ``images:`` serves every split that names none; relative paths are relative to the file.
    What detectron2's ``register_coco_instances(name, {}, json, image_root)`` takes per split.
``splits:train=TRAIN.json&val=VAL.json&images=DIR``
    The same without a file (``--data TRAIN.json --val-data VAL.json --images DIR`` on the
    command line writes it; :func:`split_files_spec`); ``<split>_images=DIR`` per split.

Anything else is a ``DatasetError`` that says what was looked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from workbench.data.dataset import DetectionDataset, Transform
from workbench.errors import ConfigError, DatasetError

BUILTIN_PREFIX = "builtin:"
SPLITS_PREFIX = "splits:"
DATASET_FILE_SUFFIXES = (".yaml", ".yml")
SHAPES_OPTIONS = {"train": "num_train", "val": "num_val", "size": "image_size", "seed": "seed"}
EXPECTED = (
    "expected builtin:shapes, a COCO JSON file, a COCO root (annotations/instances_<split>.json "
    "and <split>/), a VOC root (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt) or a "
    "dataset file (.yaml: one COCO JSON file and image folder per split)"
)


@dataclass(frozen=True)
class DataSource:
    """Where one split of a dataset lives. ``kind`` is ``"coco"`` (``ann_file`` + ``image_dir``)
    or ``"voc"`` (``root``)."""

    kind: str
    split: str
    ann_file: Path | None = None
    image_dir: Path | None = None
    root: Path | None = None

    @property
    def location(self) -> Path:
        return self.ann_file if self.kind == "coco" else self.root

    def open(self, transforms: Transform | None = None) -> DetectionDataset:
        if self.kind == "voc":
            from workbench.data.voc import VocDetection

            return VocDetection(self.root, self.split, transforms)
        from workbench.data.coco import CocoDetection, read_json

        data = read_json(self.ann_file)
        image_dir = self.image_dir or find_image_dir(self.ann_file, self.split, data)
        return CocoDetection(self.ann_file, image_dir, transforms, data=data)


def shapes_config_from_spec(spec: str):
    """The ``ShapesConfig`` of ``builtin:shapes[?key=value&...]``."""
    from workbench.data.shapes import ShapesConfig

    name, _, query = spec[len(BUILTIN_PREFIX) :].partition("?")
    if name != "shapes":
        raise ConfigError(f"unknown built-in dataset '{name}' in '{spec}' (known: shapes)")
    params = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in SHAPES_OPTIONS:
            raise ConfigError(f"unknown option '{key}' in '{spec}' (known: {', '.join(SHAPES_OPTIONS)})")
        try:
            params[SHAPES_OPTIONS[key]] = int(value)
        except ValueError:
            raise ConfigError(f"option '{key}' in '{spec}' must be an integer, got '{value}'") from None
    return ShapesConfig(**params)


def builtin_root(spec: str, progress: bool = True) -> Path:
    """The COCO root of a ``builtin:`` spec, generating it on first use."""
    from workbench.data.shapes import builtin_shapes_root

    return builtin_shapes_root(shapes_config_from_spec(spec), progress=progress)


def _is_coco_root(path: Path) -> bool:
    return path.is_dir() and any((path / "annotations").glob("instances_*.json"))


def _json_splits(path: Path) -> list[str]:
    """Splits of a folder of per-split COCO JSON files (``train.json``, ``val.json``, ...)."""
    if not path.is_dir():
        return []
    names = sorted(p.stem for p in path.glob("*.json"))
    return sorted(names, key=lambda s: (0 if s.startswith("train") else 1 if s.startswith("val") else 2, s))


def _is_voc_root(path: Path) -> bool:
    return (path / "Annotations").is_dir() and (path / "ImageSets" / "Main").is_dir()


def _coco_root_source(root: Path, split: str) -> DataSource:
    ann_file = root / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        found = ", ".join(coco_root_splits(root)) or "none"
        raise DatasetError(f"no annotations for split '{split}' (splits found: {found})", path=ann_file)
    image_dir = root / split
    if not image_dir.is_dir():
        raise DatasetError(f"no image folder for split '{split}'", path=image_dir)
    return DataSource("coco", split, ann_file=ann_file, image_dir=image_dir)


def coco_root_splits(root: Path) -> list[str]:
    """Splits of a COCO root, from ``annotations/instances_<split>.json``; train and val first."""
    names = sorted(p.stem[len("instances_") :] for p in (root / "annotations").glob("instances_*.json"))
    return sorted(names, key=lambda s: (0 if s.startswith("train") else 1 if s.startswith("val") else 2, s))


def voc_splits(root: Path) -> list[str]:
    """Splits of a VOC root: ``ImageSets/Main/*.txt`` without the per-class lists (``cat_train``)."""
    return sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)


def image_dir_candidates(ann_file: Path, split: str) -> list[Path]:
    """Folders, in order, where the images of a lone COCO JSON file may be (see the module doc)."""
    folder = ann_file.parent
    stem = ann_file.stem
    short = stem[len("instances_") :] if stem.startswith("instances_") else stem
    candidates = [folder / split, folder / stem, folder.parent / split, folder.parent / short]
    candidates += [folder / "images", folder / "data", folder]
    unique = []
    for c in candidates:
        if c not in unique:
            unique.append(c)
    return unique


def find_image_dir(ann_file: Path, split: str, data: object) -> Path:
    """The first candidate folder holding the first image of ``data``; the JSON's folder when
    the file lists no images (or is malformed, which parsing then reports)."""
    try:
        first = data["images"][0]["file_name"]
        if not isinstance(first, str):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        return ann_file.parent
    candidates = image_dir_candidates(ann_file, split)
    for folder in candidates:
        if (folder / first).is_file():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"cannot find the images: looked for '{first}' in {looked}; give the image folder (--images)",
        path=ann_file,
    )


def split_files_spec(files: dict[str, str | Path], images: str | Path | None = None) -> str:
    """The ``splits:`` spec of one COCO JSON file per split (``{"train": ..., "val": ...}``) and
    an optional image folder for all of them; paths are made absolute."""
    parts = [f"{split}={Path(path).expanduser().resolve()}" for split, path in files.items()]
    if images is not None:
        parts.append(f"images={Path(images).expanduser().resolve()}")
    return SPLITS_PREFIX + "&".join(parts)


def split_files(spec: str) -> tuple[dict[str, dict[str, Path | None]], Path | None]:
    """``split -> {"annotations": JSON path, "images": folder or None}`` of a dataset file or a
    ``splits:`` spec, and where it was read from (``None`` for a spec string)."""
    if spec.startswith(SPLITS_PREFIX):
        entries: dict[str, dict[str, object]] = {}
        shared = None
        for key, value in parse_qsl(spec[len(SPLITS_PREFIX):], keep_blank_values=True):
            if key == "images":
                shared = value
            elif key.endswith("_images"):
                entries.setdefault(key[: -len("_images")], {})["images"] = value
            else:
                entries.setdefault(key, {})["annotations"] = value
        return _split_entries(entries, shared, Path.cwd(), spec), None
    path = Path(spec).expanduser()
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"cannot read the dataset file ({type(exc).__name__}: {exc})", path=path) from None
    if not isinstance(data, dict):
        raise DatasetError("a dataset file maps split names to {annotations: FILE.json, images: DIR}", path=path)
    data = dict(data)
    shared = data.pop("images", None)
    entries = {}
    for split, entry in data.items():
        if isinstance(entry, str):
            entry = {"annotations": entry}
        if not isinstance(entry, dict):
            raise DatasetError(f"split '{split}': expected {{annotations: FILE.json, images: DIR}}", path=path)
        entries[str(split)] = entry
    return _split_entries(entries, shared, path.parent, path), path


def _split_entries(entries: dict, shared: object, base: Path, where: object) -> dict[str, dict[str, Path | None]]:
    out = {}
    for split, entry in entries.items():
        unknown = set(entry) - {"annotations", "images"}
        if unknown or "annotations" not in entry:
            raise DatasetError(
                f"split '{split}' needs 'annotations' (a COCO JSON file) and may have 'images'"
                + (f"; unknown keys: {', '.join(sorted(unknown))}" if unknown else ""),
                path=Path(str(where)),
            )
        images = entry.get("images", shared)
        out[split] = {
            "annotations": base / Path(str(entry["annotations"])).expanduser(),
            "images": None if images is None else base / Path(str(images)).expanduser(),
        }
    if not out:
        raise DatasetError("names no split", path=Path(str(where)))
    return out


def _is_split_files(spec: str) -> bool:
    return spec.startswith(SPLITS_PREFIX) or Path(spec).suffix.lower() in DATASET_FILE_SUFFIXES


def _split_file_source(spec: str, split: str) -> DataSource:
    entries, origin = split_files(spec)
    if split not in entries:
        raise DatasetError(
            f"no split '{split}' (splits: {', '.join(entries)})", path=origin or Path(spec[len(SPLITS_PREFIX):])
        )
    ann_file, image_dir = entries[split]["annotations"], entries[split]["images"]
    if not ann_file.is_file():
        raise DatasetError(f"split '{split}': no such annotation file", path=ann_file)
    if image_dir is not None and not image_dir.is_dir():
        raise DatasetError(f"split '{split}': no such image folder", path=image_dir)
    return DataSource("coco", split, ann_file=ann_file, image_dir=image_dir)


def resolve_source(spec: str, split: str, image_dir: str | Path | None = None, progress: bool = True) -> DataSource:
    """Where split ``split`` of ``spec`` lives (see the module doc for the spec formats).

    ``progress`` shows a progress bar when a built-in dataset is generated."""
    if spec.startswith(BUILTIN_PREFIX):
        return _coco_root_source(builtin_root(spec, progress), split)
    if spec.startswith(SPLITS_PREFIX):
        return _split_file_source(spec, split)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(f"no such file or folder; {EXPECTED}", path=path)
    if path.is_file():
        if path.suffix.lower() in DATASET_FILE_SUFFIXES:
            return _split_file_source(spec, split)
        if path.suffix.lower() != ".json":
            raise DatasetError(f"not a JSON file; {EXPECTED}", path=path)
        return DataSource("coco", split, ann_file=path, image_dir=Path(image_dir) if image_dir else None)
    if _is_coco_root(path):
        return _coco_root_source(path, split)
    if _is_voc_root(path):
        return DataSource("voc", split, root=path)
    if _json_splits(path):
        ann_file = path / f"{split}.json"
        if not ann_file.is_file():
            raise DatasetError(f"no annotations for split '{split}' (splits found: {', '.join(_json_splits(path))})",
                               path=ann_file)
        return DataSource("coco", split, ann_file=ann_file, image_dir=Path(image_dir) if image_dir else None)
    raise DatasetError(f"not a dataset folder; {EXPECTED}", path=path)


def list_sources(spec: str, image_dir: str | Path | None = None, progress: bool = True) -> list[DataSource]:
    """Every split found in ``spec``: all splits of a root, or the one split of a JSON file
    (named after the file, ``instances_`` left out)."""
    if spec.startswith(BUILTIN_PREFIX):
        root = builtin_root(spec, progress)
        return [_coco_root_source(root, s) for s in coco_root_splits(root)]
    if _is_split_files(spec):
        entries, _ = split_files(spec)
        return [_split_file_source(spec, s) for s in entries]
    path = Path(spec).expanduser()
    if path.is_dir() and _is_coco_root(path):
        return [_coco_root_source(path, s) for s in coco_root_splits(path)]
    if path.is_dir() and _is_voc_root(path):
        splits = voc_splits(path)
        if not splits:
            raise DatasetError("no split files (<split>.txt)", path=path / "ImageSets" / "Main")
        return [DataSource("voc", s, root=path) for s in splits]
    if _json_splits(path):
        return [resolve_source(spec, s, image_dir) for s in _json_splits(path)]
    stem = path.stem
    split = stem[len("instances_") :] if stem.startswith("instances_") else stem
    return [resolve_source(spec, split, image_dir)]


def open_dataset(
    spec: str,
    split: str,
    transforms: Transform | None = None,
    image_dir: str | Path | None = None,
    progress: bool = True,
) -> DetectionDataset:
    """Open split ``split`` of the dataset ``spec`` (see the module doc) as a dataset of ``Sample``s.

    ``image_dir`` is only used for a lone COCO JSON file; ``progress`` only when a built-in
    dataset is generated on first use.
    """
    return resolve_source(str(spec), split, image_dir, progress).open(transforms)
