"""Saved traces: what a detector recorded per image while predicting, on disk and back.

A *trace* is, per image, the records of :class:`workbench.modeling.TraceRecorder` (record name
-> field name -> tensor; the names are the constants of :mod:`workbench.records`, e.g.
``anchors``, ``rpn_proposals``, ``rcnn_nms``, ``detections``, plus those a method adds). Which
records a method writes and how each is shown is its declaration
(``workbench.methods.Method.record_views``); this module stores whatever was recorded. Boxes
are absolute ``xyxy`` in the pixels of the original image; maps follow
:data:`workbench.records.MAP_CELL_SIZE`.

On-disk format ``workbench-trace``, version 2 (``FORMAT_NAME``, ``FORMAT_VERSION``)::

    RUN/traces/<split>/
      manifest.json        what the traces are (below); written last
      shard-00000.npz      the tensors of up to ``shard_size`` images (default 256)
      shard-00001.npz
      ...
      shared-00000.npy     arrays referenced by the images of several shards (the anchors)

``manifest.json`` holds ``format`` (``"workbench-trace"``), ``version`` (int),
``workbench_version`` (the package version that wrote it), ``method``,
``split``, ``num_images``, ``records`` (record name -> sorted field names, the union over
images), ``shards`` (file names), ``shared`` (file names, version 2), ``images`` (one entry per
image, in prediction order: ``image_id``, ``file_name``, ``orig_size`` ``[height, width]``,
``shard`` (index into ``shards``)) and ``meta`` (free-form JSON given by the writer: the dataset
spec, checkpoint, image folder, categories ...).

Each shard is a NumPy ``.npz`` whose members are deflate-compressed at zlib level
``SHARD_COMPRESSLEVEL`` (what ``numpy.savez_compressed`` writes, at a faster level; readable with
``numpy.load(..., allow_pickle=False)``, no torch or pickle needed; shards written uncompressed
by earlier versions read the same). Its member ``__index__`` is a 0-d string array
holding a JSON object: ``images`` (one ``{record: {field: key}}`` per image of the shard, in
manifest order), ``raw`` (``key -> [torch dtype, shape]`` for the tensors whose dtype NumPy
lacks, e.g. ``bfloat16``, stored as their bytes in ``uint8``), ``cast`` (``key -> NumPy dtype``:
integer tensors are stored in the smallest signed integer type that holds their values and
cast back on reading, so ``int64`` indices and levels cost one to four bytes, losslessly),
``bits`` (``key -> shape`` of a bool tensor stored as its bits, eight to a byte) and
``shared`` (``key -> file name`` of a ``shared-*.npy`` file). Every other member is one array
named by its key. Tensors are stored by content: identical tensors within a shard (the boxes
that ``rpn_proposals_pre_nms`` and ``rpn_nms`` share) are written once and referenced by every
image and record that holds them.

Boxes that are the same for every image of one network-input size (the anchors) are recorded
with two more fields (:data:`workbench.modeling.trace.NETWORK_BOXES`, the boxes in network-input
pixels, and :data:`~workbench.modeling.trace.BOX_SCALE`, ``(scale_x, scale_y)`` to original
pixels): the writer stores ``network_boxes`` and the record's other fields but ``box_scale``
(the anchors' ``levels``) once per trace directory in ``shared-*.npy`` files, and not ``boxes``,
which the reader recomputes as
``scale_boxes(network_boxes, scale_x, scale_y)``, bit-identical to the recorded ones. At COCO
input size this takes the anchors (268,569 of them for ResNet-50-FPN, 6.4 MB an image) out of
the per-image cost.

Reading is lazy: :class:`TraceSet` opens one shard at a time and reads from it only the arrays
of the images asked for; ``shared-*.npy`` files are memory-mapped. Per-level map records come
back wrapped by :func:`workbench.inspection.maps.as_map_record` (composed when shown).

Compatibility: readers refuse a different ``format`` and a ``version`` newer than theirs;
they keep reading version 1 directories (no ``cast``, ``shared`` or network boxes). New record
names or fields do not change the version; a change of layout does.
"""

from __future__ import annotations

import hashlib
import io
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
from workbench.inspection.maps import as_map_record
from workbench.modeling.trace import BOX_SCALE, NETWORK_BOXES
from workbench.ops import scale_boxes

FORMAT_NAME = "workbench-trace"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
INDEX_KEY = "__index__"
SHARED_PREFIX = "shared-"
DEFAULT_SHARD_SIZE = 256
#: zlib level of the shards' members. Level 1 keeps the write cheap: on the COCO-size traces of
#: ``benchmarks/bench_trace_size.py``, zlib's default level 6 made the shards 2 to 8 % smaller
#: for 1.4 to 1.6 times the write time (docs/benchmarks.md, "Trace size at COCO scale").
SHARD_COMPRESSLEVEL = 1


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
    image up by its dataset id. Opening the set reads only the manifest; indexing opens the
    image's shard (one shard is kept open) and reads from it only that image's arrays, so
    iterating in order opens each shard once and showing a few images of thousands reads only
    theirs. Tensors stored once for several images or records (see the module docstring) share
    memory after loading: clone before editing one in place.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._position = {int(im["image_id"]): i for i, im in enumerate(manifest["images"])}
        self._shard_number: int | None = None
        self._shard: ShardReader | None = None
        self._shared = SharedArrays(self.path)
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
        records = self._open_shard(int(entry["shard"])).image(index - self._first_of_shard[int(entry["shard"])])
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

    def _open_shard(self, number: int) -> "ShardReader":
        if self._shard_number != number or self._shard is None:
            self.close()
            self._shard = ShardReader(self.path / self.manifest["shards"][number], self._shared)
            self._shard_number = number
        return self._shard

    def close(self) -> None:
        """Close the open shard (indexing opens it again when needed)."""
        if self._shard is not None:
            self._shard.close()
        self._shard, self._shard_number = None, None


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


def narrow_integers(array: np.ndarray) -> np.ndarray:
    """``array`` in the smallest signed integer type (``int8`` .. ``int64``) that holds its
    values, when that is narrower than its own; any other array unchanged. Casting back to the
    recorded dtype restores it exactly."""
    if array.dtype.kind not in "iu" or array.dtype.itemsize == 1 or array.size == 0:
        return array
    low, high = int(array.min()), int(array.max())
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if np.dtype(dtype).itemsize < array.dtype.itemsize and info.min <= low and high <= info.max:
            return array.astype(dtype)
    return array


def pack_bits(array: np.ndarray) -> np.ndarray | None:
    """A bool array as its bits, eight to a byte (``numpy.packbits`` of the flattened array);
    ``None`` for any other array. :func:`unpack_bits` with the shape restores it exactly."""
    if array.dtype != np.bool_:
        return None
    return np.packbits(array.reshape(-1))


def unpack_bits(packed: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pack_bits`."""
    count = int(np.prod(shape, dtype=np.int64))
    return np.unpackbits(packed, count=count).astype(np.bool_).reshape(tuple(shape))


def network_box_record(fields: Mapping[str, Tensor]) -> bool:
    """Whether a record's ``boxes`` are recomputed on reading from ``network_boxes`` and
    ``box_scale`` (see the module docstring), so the writer does not store them."""
    return NETWORK_BOXES in fields and BOX_SCALE in fields


def restore_boxes(fields: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add ``boxes`` to a read record stored without them: ``scale_boxes(network_boxes,
    scale_x, scale_y)`` with the recorded factors, the computation of
    :meth:`workbench.modeling.TraceRecorder.rescale_boxes`, so the result is bit-identical."""
    if "boxes" not in fields and network_box_record(fields):
        scale_x, scale_y = (float(v) for v in fields[BOX_SCALE].tolist())
        fields["boxes"] = scale_boxes(fields[NETWORK_BOXES], scale_x, scale_y)
    return fields


class SharedStore:
    """The writer's ``shared-*.npy`` files: arrays referenced from several shards, one file per
    content (:func:`content_key`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, str] = {}

    def put(self, digest: str, array: np.ndarray) -> str:
        """The file name holding ``array`` (written on its first use)."""
        name = self.files.get(digest)
        if name is None:
            name = f"{SHARED_PREFIX}{len(self.files):05d}.npy"
            with atomic_output(self.directory / name) as f:
                np.save(f, array, allow_pickle=False)
            self.files[digest] = name
        return name


class ShardBuilder:
    """Collects the records of consecutive images and writes them as one ``.npz`` shard.

    ``shared``: where the fields of a network-box record (``network_boxes`` and the other
    per-anchor fields, e.g. ``levels``; not ``box_scale``) go, one file per content for the whole
    directory; without it they are stored in the shard like any other tensor."""

    def __init__(self, shared: SharedStore | None = None) -> None:
        self.images: list[dict[str, dict[str, str]]] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.raw: dict[str, list[Any]] = {}
        self.cast: dict[str, str] = {}
        self.bits: dict[str, list[int]] = {}
        self.shared_files: dict[str, str] = {}
        self.shared = shared
        self._names: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.images)

    def add(self, records: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Store one image's records (tensors equal to stored ones are referenced, not copied)."""
        self.images.append({name: self._store_record(fields) for name, fields in records.items()})

    def _store_record(self, fields: Mapping[str, Tensor]) -> dict[str, str]:
        derived = network_box_record(fields)
        return {f: self._store(t, shared=derived and f != BOX_SCALE) for f, t in fields.items()
                if not (derived and f == "boxes")}

    def _store(self, tensor: Tensor, *, shared: bool = False) -> str:
        array, raw = tensor_to_array(tensor)
        digest = content_key(array) + ("" if raw is None else f"-{raw[0]}")
        name = self._names.get(digest)
        if name is not None:
            return name
        name = f"t{len(self._names)}"
        self._names[digest] = name
        stored = narrow_integers(array) if raw is None else array
        if stored.dtype != array.dtype:
            self.cast[name] = array.dtype.str
        packed = pack_bits(array)
        if packed is not None:
            stored, self.bits[name] = packed, list(array.shape)
        if shared and self.shared is not None:
            self.shared_files[name] = self.shared.put(digest, stored)
        else:
            self.arrays[name] = stored
        if raw is not None:
            self.raw[name] = raw
        return name

    def write(self, path: Path) -> None:
        """Write the shard to ``path`` (a compressed ``.npz``: :func:`write_npz`)."""
        index = json.dumps({"images": self.images, "raw": self.raw, "cast": self.cast, "bits": self.bits,
                            "shared": self.shared_files},
                           separators=(",", ":"))
        with atomic_output(path) as f:
            write_npz(f, {INDEX_KEY: np.array(index), **self.arrays})


def write_npz(file: Any, arrays: Mapping[str, np.ndarray], compresslevel: int = SHARD_COMPRESSLEVEL) -> None:
    """Write ``arrays`` to the binary file object ``file`` as an ``.npz``: one ``<key>.npy``
    member per array (``numpy.lib.format``, no pickle), deflate-compressed at ``compresslevel``.

    The layout is ``numpy.savez_compressed``'s, so ``numpy.load`` reads it and indexing the
    ``NpzFile`` decompresses only the member asked for; ``savez_compressed`` itself takes no
    level (it uses zlib's default, 6)."""
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            archive.writestr(f"{key}.npy", member.getvalue())


class SharedArrays:
    """The reader's ``shared-*.npy`` files of one trace directory, memory-mapped when first
    referenced and kept for the life of the :class:`TraceSet`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.directory / name, mmap_mode="r", allow_pickle=False)
        return self._arrays[name]


def open_shard(path: Path) -> Any:
    """``numpy.load`` of a shard: an ``NpzFile`` that reads a member only when it is indexed."""
    return np.load(path, allow_pickle=False)


class ShardReader:
    """One open shard: its index, and the tensors of the images read so far (by key, so a tensor
    several images share is read once)."""

    def __init__(self, path: Path, shared: SharedArrays | None = None) -> None:
        self.path = path
        self.shared = shared if shared is not None else SharedArrays(path.parent)
        try:
            self.npz = open_shard(path)
            self.index = json.loads(str(self.npz[INDEX_KEY]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise WorkbenchError(f"{path}: cannot read the trace shard ({exc})") from None
        self._tensors: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return len(self.index["images"])

    def image(self, position: int) -> dict[str, dict[str, Tensor]]:
        """The records of the shard's image ``position`` (``0 .. len - 1``)."""
        fields_of = self.index["images"][position]
        return {name: as_map_record(restore_boxes({f: self._tensor(key) for f, key in fields.items()}))
                for name, fields in fields_of.items()}

    def _tensor(self, key: str) -> Tensor:
        if key not in self._tensors:
            try:
                array = self._array(key)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise WorkbenchError(f"{self.path}: cannot read the trace shard ({exc})") from None
            bits = self.index.get("bits", {}).get(key)
            if bits is not None:
                array = unpack_bits(array, bits)
            cast = self.index.get("cast", {}).get(key)
            if cast is not None:
                array = array.astype(np.dtype(cast))
            self._tensors[key] = array_to_tensor(array, self.index["raw"].get(key))
        return self._tensors[key]

    def _array(self, key: str) -> np.ndarray:
        shared = self.index.get("shared", {}).get(key)
        if shared is None:
            return self.npz[key]
        return np.array(self.shared[shared])  # a private copy: tensors may be edited in place

    def close(self) -> None:
        self.npz.close()


def read_shard(path: Path) -> list[dict[str, dict[str, Tensor]]]:
    """The records of every image of one shard, as written by :class:`ShardBuilder`."""
    reader = ShardReader(path)
    try:
        return [reader.image(i) for i in range(len(reader))]
    finally:
        reader.close()


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
        self._shared = SharedStore(self.tmp_dir)
        self._builder = ShardBuilder(self._shared)
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
        self._builder = ShardBuilder(self._shared)

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
            "shared": sorted(self._shared.files.values()),
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
    "SHARD_COMPRESSLEVEL",
    "TraceSet",
    "TraceWriter",
    "load_traces",
    "save_traces",
    "trace_dir",
]
