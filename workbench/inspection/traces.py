"""Saved traces: what a detector recorded per image while predicting, on disk and back.

A *trace* is, per image, the records of :class:`workbench.modeling.TraceRecorder` (record name
-> field name -> tensor; the names are the constants of :mod:`workbench.records`, e.g.
``anchors``, ``rpn_proposals``, ``rcnn_nms``, ``detections``, plus those a method adds). Which
records a method writes and how each is shown is its declaration
(``workbench.methods.Method.record_views``); this module stores whatever was recorded. Boxes
are absolute ``xyxy`` in the pixels of the original image; maps follow
:data:`workbench.records.MAP_CELL_SIZE`.

On-disk format ``workbench-trace``, version 1 (``FORMAT_NAME``, ``FORMAT_VERSION``)::

    RUN/traces/<split>/
      manifest.json        what the traces are (below); written last
      shard-00000.npz      the tensors of up to ``shard_size`` images (default 256)
      shard-00001.npz
      ...

``manifest.json`` holds ``format`` (``"workbench-trace"``), ``version`` (int),
``workbench_version`` (the package version that wrote it), ``method``,
``split``, ``num_images``, ``records`` (record name -> sorted field names, the union over
images), ``shards`` (file names), ``images`` (one entry per image, in prediction order:
``image_id``, ``file_name``, ``orig_size`` ``[height, width]``, ``shard`` (index into
``shards``)) and ``meta`` (free-form JSON given by the writer: the dataset spec, checkpoint,
image folder, categories ...).

Each shard is an uncompressed NumPy ``.npz`` (readable with ``numpy.load(...,
allow_pickle=False)``, no torch or pickle needed). Its member ``__index__`` is a 0-d string array
holding a JSON object: ``images`` (one ``{record: {field: key}}`` per image of the shard, in
manifest order) and ``raw`` (``key -> [torch dtype, shape]`` for the tensors whose dtype NumPy
lacks, e.g. ``bfloat16``, stored as their bytes in ``uint8``). Every other member is one array
named by its key. Tensors are stored by content: identical tensors within a shard (the anchors
of every image of one size, the boxes that ``rpn_proposals_pre_nms`` and ``rpn_nms`` share)
are written once and referenced by every image and record that holds them.

Compatibility: readers refuse a different ``format`` and a ``version`` newer than theirs;
version 1 readers will keep reading version 1 directories. New record names or fields do not
change the version; a change of layout does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench import __version__
from workbench.atomic import atomic_output, write_text_atomic
from workbench.errors import WorkbenchError

FORMAT_NAME = "workbench-trace"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_KEY = "__index__"
DEFAULT_SHARD_SIZE = 256


@dataclass
class ImageTrace:
    """The trace of one image.

    ``image_id`` and ``file_name`` are the dataset's; ``orig_size`` is ``(height, width)`` of the
    image as stored; ``records`` maps a record name to its fields (name -> tensor on the CPU).
    """

    image_id: int
    file_name: str
    orig_size: tuple[int, int]
    records: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> dict[str, Tensor]:
        """The fields of record ``name`` (``KeyError`` naming the records there are)."""
        try:
            return self.records[name]
        except KeyError:
            raise KeyError(f"image {self.image_id} has no record {name!r}; records: {sorted(self.records)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.records

    def get(self, name: str, default: Any = None) -> dict[str, Tensor] | Any:
        return self.records.get(name, default)


def trace_dir(run_dir: Path | str, split: str) -> Path:
    """Where the traces of ``split`` live in a run directory: ``RUN/traces/<split>``."""
    return Path(run_dir) / "traces" / split


class TraceSet(Sequence[ImageTrace]):
    """The saved traces of one split of a run; a read-only sequence of :class:`ImageTrace`.

    Indexing is by position (prediction order, ``image_ids[i]``); :meth:`by_image_id` looks an
    image up by its dataset id. Shards are read when first needed and one is kept in memory, so
    iterating in order reads each shard once. Tensors stored once for several images or records
    (see the module docstring) share memory after loading: clone before editing one in place.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._position = {int(im["image_id"]): i for i, im in enumerate(manifest["images"])}
        self._shard_number: int | None = None
        self._shard: list[dict[str, dict[str, Tensor]]] = []
        self._first_of_shard = _first_positions(manifest["images"])

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def split(self) -> str:
        return self.manifest["split"]

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.get("meta", {})

    @property
    def record_names(self) -> list[str]:
        """Every record name present in at least one image."""
        return list(self.manifest["records"])

    @property
    def image_ids(self) -> list[int]:
        return [int(im["image_id"]) for im in self.manifest["images"]]

    def __len__(self) -> int:
        return len(self.manifest["images"])

    def __getitem__(self, index: int) -> ImageTrace:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("TraceSet takes an integer position, not a slice")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"trace position {index} out of range for {n} images")
        index %= n
        entry = self.manifest["images"][index]
        records = self._load_shard(int(entry["shard"]))[index - self._first_of_shard[int(entry["shard"])]]
        return ImageTrace(
            image_id=int(entry["image_id"]),
            file_name=str(entry["file_name"]),
            orig_size=(int(entry["orig_size"][0]), int(entry["orig_size"][1])),
            records=records,
        )

    def __iter__(self) -> Iterator[ImageTrace]:
        for i in range(len(self)):
            yield self[i]

    def by_image_id(self, image_id: int) -> ImageTrace:
        """The trace of the image whose dataset id is ``image_id``."""
        if int(image_id) not in self._position:
            raise KeyError(f"no trace of image id {image_id} in {self.path}")
        return self[self._position[int(image_id)]]

    def _load_shard(self, number: int) -> list[dict[str, dict[str, Tensor]]]:
        if self._shard_number != number:
            self._shard = read_shard(self.path / self.manifest["shards"][number])
            self._shard_number = number
        return self._shard


def _first_positions(images: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Shard number -> position of its first image (images of a shard are consecutive)."""
    first: dict[int, int] = {}
    for i, im in enumerate(images):
        first.setdefault(int(im["shard"]), i)
    return first


def load_traces(run_dir: Path | str, split: str | None = None) -> TraceSet:
    """The traces that ``workbench predict --run RUN --trace`` saved for ``split``.

    Args:
        run_dir: a run directory (traces are read from ``RUN/traces/<split>``), or a trace
            directory itself (one holding ``manifest.json``; ``split`` is then ignored).
        split: the dataset split; ``None`` picks the only traced split of the run (an error when
            there are several or none).

    Returns:
        A :class:`TraceSet`: ``len(traces)`` images; ``traces[i]`` / iteration / ``by_image_id``
        give :class:`ImageTrace` objects with ``image_id``, ``file_name``, ``orig_size``
        ``(height, width)`` and ``records`` (record name -> field name -> CPU tensor, exactly as
        recorded). ``traces.method``, ``traces.split``, ``traces.record_names``,
        ``traces.image_ids`` and ``traces.meta`` describe the set.

    Raises:
        WorkbenchError: no traces there, or a format or version this reader does not know.
    """
    path = _resolve_trace_dir(Path(run_dir), split)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise WorkbenchError(
            f"{path}: no traces (no {MANIFEST}); write them with `workbench predict --run RUN --trace`"
        )
    try:
        manifest = json.loads(manifest_file.read_text())
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{manifest_file}: not valid JSON ({exc})") from None
    check_manifest(manifest, manifest_file)
    return TraceSet(path, manifest)


def _resolve_trace_dir(root: Path, split: str | None) -> Path:
    if (root / MANIFEST).is_file():
        return root
    if split is not None:
        return trace_dir(root, split)
    splits = sorted(p.name for p in (root / "traces").glob("*")
                    if not p.name.startswith(".") and (p / MANIFEST).is_file())
    if len(splits) != 1:
        found = ", ".join(splits) if splits else "none"
        raise WorkbenchError(f"{root}: name the split of the traces to load (traced splits: {found})")
    return trace_dir(root, splits[0])


def check_manifest(manifest: Mapping[str, Any], source: Path) -> None:
    """Raise ``WorkbenchError`` unless ``manifest`` is a trace manifest this reader can read."""
    if manifest.get("format") != FORMAT_NAME:
        raise WorkbenchError(f"{source}: not a {FORMAT_NAME} manifest (format {manifest.get('format')!r})")
    version = manifest.get("version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise WorkbenchError(
            f"{source}: trace format version {version!r}; this workbench reads versions 1 to {FORMAT_VERSION}"
        )
    for key in ("method", "split", "records", "shards", "images"):
        if key not in manifest:
            raise WorkbenchError(f"{source}: the manifest has no {key!r}")


# --------------------------------------------------------------------------------------------
# tensors <-> shard arrays


def tensor_to_array(tensor: Tensor) -> tuple[np.ndarray, list[Any] | None]:
    """A CPU copy of ``tensor`` as a NumPy array, and ``None``; for dtypes NumPy lacks, its bytes
    as ``uint8`` and ``[torch dtype name, shape]`` to restore it."""
    tensor = tensor.detach().to("cpu").contiguous()
    try:
        return tensor.numpy(), None
    except TypeError:
        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        return raw, [str(tensor.dtype).removeprefix("torch."), list(tensor.shape)]


def array_to_tensor(array: np.ndarray, raw: Sequence[Any] | None = None) -> Tensor:
    """Inverse of :func:`tensor_to_array`."""
    tensor = torch.from_numpy(np.require(array, requirements="C"))
    if raw is None:
        return tensor
    dtype_name, shape = raw
    return tensor.view(getattr(torch, dtype_name)).reshape(tuple(shape))


def content_key(array: np.ndarray) -> str:
    """A key naming the array's dtype, shape and bytes (equal arrays, equal keys)."""
    flat = np.require(array, requirements="C").reshape(-1).view(np.uint8)
    digest = hashlib.blake2b(flat, digest_size=20).hexdigest()
    shape = "x".join(str(s) for s in array.shape) or "scalar"
    return f"{array.dtype.str}-{shape}-{digest}"


class ShardBuilder:
    """Collects the records of consecutive images and writes them as one ``.npz`` shard."""

    def __init__(self) -> None:
        self.images: list[dict[str, dict[str, str]]] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.raw: dict[str, list[Any]] = {}
        self._names: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.images)

    def add(self, records: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Store one image's records (tensors equal to stored ones are referenced, not copied)."""
        self.images.append(
            {name: {f: self._store(t) for f, t in fields.items()} for name, fields in records.items()}
        )

    def _store(self, tensor: Tensor) -> str:
        array, raw = tensor_to_array(tensor)
        digest = content_key(array) + ("" if raw is None else f"-{raw[0]}")
        name = self._names.get(digest)
        if name is None:
            name = f"t{len(self.arrays)}"
            self._names[digest] = name
            self.arrays[name] = array
            if raw is not None:
                self.raw[name] = raw
        return name

    def write(self, path: Path) -> None:
        """Write the shard to ``path`` (an uncompressed ``.npz``)."""
        index = json.dumps({"images": self.images, "raw": self.raw}, separators=(",", ":"))
        with atomic_output(path) as f:
            np.savez(f, **{INDEX_KEY: np.array(index)}, **self.arrays)


def read_shard(path: Path) -> list[dict[str, dict[str, Tensor]]]:
    """The records of every image of one shard, as written by :class:`ShardBuilder`."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            index = json.loads(str(npz[INDEX_KEY]))
            tensors = {key: array_to_tensor(npz[key], index["raw"].get(key)) for key in npz.files if key != INDEX_KEY}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise WorkbenchError(f"{path}: cannot read the trace shard ({exc})") from None
    return [
        {name: {f: tensors[key] for f, key in fields.items()} for name, fields in image.items()}
        for image in index["images"]
    ]


# --------------------------------------------------------------------------------------------
# writing


class TraceWriter:
    """Writes traces image by image into a trace directory, replacing what was there.

    Shards go to a uniquely named temporary sibling directory (``tempfile.mkdtemp``), each shard
    and the manifest written and ``fsync``-ed through :mod:`workbench.atomic`; :meth:`close`
    writes the manifest last and renames the directory into place, so readers never see a
    half-written set (between the two renames of a replacement the directory is briefly absent,
    and :func:`load_traces` says there are no traces rather than reading a partial set). Use as a context manager
    (an exception discards the partial output).
    """

    def __init__(
        self,
        out_dir: Path | str,
        *,
        method: str,
        split: str,
        meta: Mapping[str, Any] | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.out_dir = Path(out_dir)
        self.method = method
        self.split = split
        self.meta = dict(meta or {})
        self.shard_size = shard_size
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))
        self._images: list[dict[str, Any]] = []
        self._fields: dict[str, set[str]] = {}
        self._shards: list[str] = []
        self._builder = ShardBuilder()
        self._closed = False

    def add(self, trace: ImageTrace) -> None:
        """Append one image's trace."""
        if self._closed:
            raise RuntimeError("the trace writer is closed")
        self._builder.add(trace.records)
        for name, fields in trace.records.items():
            self._fields.setdefault(name, set()).update(fields)
        self._images.append(
            {
                "image_id": int(trace.image_id),
                "file_name": str(trace.file_name),
                "orig_size": [int(trace.orig_size[0]), int(trace.orig_size[1])],
                "shard": len(self._shards),
            }
        )
        if len(self._builder) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if len(self._builder) == 0:
            return
        name = f"shard-{len(self._shards):05d}.npz"
        self._builder.write(self.tmp_dir / name)
        self._shards.append(name)
        self._builder = ShardBuilder()

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "workbench_version": __version__,
            "method": self.method,
            "split": self.split,
            "num_images": len(self._images),
            "records": {name: sorted(fields) for name, fields in self._fields.items()},
            "shards": list(self._shards),
            "images": self._images,
            "meta": self.meta,
        }

    def close(self) -> Path:
        """Write the last shard and the manifest, and move the directory into place."""
        if self._closed:
            return self.out_dir
        self._flush()
        write_text_atomic(self.tmp_dir / MANIFEST, json.dumps(self.manifest(), indent=1) + "\n")
        old = None
        if self.out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.old-", dir=self.out_dir.parent))
            self.out_dir.replace(old / self.out_dir.name)
        self.tmp_dir.replace(self.out_dir)
        if old is not None:
            shutil.rmtree(old)
        self._closed = True
        return self.out_dir

    def discard(self) -> None:
        """Drop the partial output; what was in ``out_dir`` stays."""
        if not self._closed and self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self._closed = True

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def save_traces(
    traces: Iterable[ImageTrace],
    out_dir: Path | str,
    *,
    method: str,
    split: str,
    meta: Mapping[str, Any] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> Path:
    """Write ``traces`` to the trace directory ``out_dir`` (e.g. :func:`trace_dir` of a run),
    replacing its contents, in the format of the module docstring; returns ``out_dir``.

    ``meta`` is stored as the manifest's ``meta`` (JSON-serializable values only).
    """
    with TraceWriter(out_dir, method=method, split=split, meta=meta, shard_size=shard_size) as writer:
        for trace in traces:
            writer.add(trace)
    return Path(out_dir)


__all__ = [
    "DEFAULT_SHARD_SIZE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ImageTrace",
    "TraceSet",
    "TraceWriter",
    "load_traces",
    "save_traces",
    "trace_dir",
]
