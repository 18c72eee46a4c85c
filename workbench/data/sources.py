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

Anything else is a ``DatasetError`` that says what was looked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from workbench.data.dataset import DetectionDataset, Transform
from workbench.errors import ConfigError, DatasetError

BUILTIN_PREFIX = "builtin:"
SHAPES_OPTIONS = {"train": "num_train", "val": "num_val", "size": "image_size", "seed": "seed"}
EXPECTED = (
    "expected builtin:shapes, a COCO JSON file, a COCO root (annotations/instances_<split>.json "
    "and <split>/) or a VOC root (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt)"
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


def resolve_source(spec: str, split: str, image_dir: str | Path | None = None, progress: bool = True) -> DataSource:
    """Where split ``split`` of ``spec`` lives (see the module doc for the spec formats).

    ``progress`` shows a progress bar when a built-in dataset is generated."""
    if spec.startswith(BUILTIN_PREFIX):
        return _coco_root_source(builtin_root(spec, progress), split)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(f"no such file or folder; {EXPECTED}", path=path)
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DatasetError(f"not a JSON file; {EXPECTED}", path=path)
        return DataSource("coco", split, ann_file=path, image_dir=Path(image_dir) if image_dir else None)
    if _is_coco_root(path):
        return _coco_root_source(path, split)
    if _is_voc_root(path):
        return DataSource("voc", split, root=path)
    raise DatasetError(f"not a dataset folder; {EXPECTED}", path=path)


def list_sources(spec: str, image_dir: str | Path | None = None, progress: bool = True) -> list[DataSource]:
    """Every split found in ``spec``: all splits of a root, or the one split of a JSON file
    (named after the file, ``instances_`` left out)."""
    if spec.startswith(BUILTIN_PREFIX):
        root = builtin_root(spec, progress)
        return [_coco_root_source(root, s) for s in coco_root_splits(root)]
    path = Path(spec).expanduser()
    if path.is_dir() and _is_coco_root(path):
        return [_coco_root_source(path, s) for s in coco_root_splits(path)]
    if path.is_dir() and _is_voc_root(path):
        splits = voc_splits(path)
        if not splits:
            raise DatasetError("no split files (<split>.txt)", path=path / "ImageSets" / "Main")
        return [DataSource("voc", s, root=path) for s in splits]
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
