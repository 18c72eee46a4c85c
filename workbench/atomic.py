"""Writes into a run directory that readers see whole or not at all.

- :func:`write_bytes_atomic` / :func:`write_text_atomic` / :func:`write_json_atomic`: the new
  content goes to a temporary file created with ``tempfile.mkstemp`` in the target's own folder
  (a unique name per call, so concurrent writers of one path never share a temporary file),
  is flushed and ``fsync``-ed, then renamed over the target with ``os.replace`` (atomic on one
  file system). A reader sees the old file or the complete new one; of two concurrent writers,
  one whole content wins. On any failure, including ``KeyboardInterrupt``, the temporary file is
  removed and the old file stays. After the rename the folder is ``fsync``-ed too (where the
  platform allows it) so the rename itself survives a power cut.
- :func:`atomic_output`: the same for writers that need a file object or a path
  (``torch.save``, ``np.savez``, ``PIL.Image.save``).
- :func:`append_line_atomic`: appends one line (a metrics record) with a single ``os.write``
  on a descriptor opened with ``O_APPEND``, then ``fsync``. POSIX places every ``O_APPEND``
  write at the end of the file, so concurrent appenders never interleave inside a line; one
  ``write`` of a regular file is not cut short except by a full disk or a signal, and if it is
  (fewer bytes written than asked) the partial tail is truncated away before the error is
  raised, so the file never ends in a torn line (unless the process dies inside that one
  write; readers of metrics lines skip a last line without its newline). Rewriting the whole file atomically on every
  append would cost O(file) per line, which metrics logged every few steps of a long run
  cannot afford.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def _file_mode(path: Path) -> int:
    """The permissions the written file gets: those of the file it replaces, else what ``open``
    would give a new file (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_process_umask()


@functools.lru_cache(maxsize=1)
def _process_umask() -> int:
    """The umask, read once (reading it means setting it, briefly)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _sync_dir(folder: Path) -> None:
    """``fsync`` a folder so a rename in it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file object to write ``path``'s new content to; on a clean exit it is flushed,
    ``fsync``-ed and renamed over ``path``; on an exception it is removed and ``path`` is left
    as it was. Parent folders are created.

    ```python
    with atomic_output(run / "checkpoints" / "last.pt") as f:
        torch.save(state, f)
    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Replace ``path`` (parent folders created) by ``data``, atomically (module docstring)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_bytes_atomic takes bytes, not {type(data).__name__}")
    path = Path(path)
    with atomic_output(path) as f:
        f.write(data)
    return path


def write_text_atomic(path: Path | str, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` (parent folders created) by ``text``, atomically (module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"write_text_atomic takes str, not {type(text).__name__}")
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: Path | str, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """``obj`` as JSON text plus a newline, written by :func:`write_text_atomic`. The JSON is
    built before anything is written, so an unserialisable value leaves ``path`` untouched."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def append_line_atomic(path: Path | str, line: str, encoding: str = "utf-8") -> None:
    """Append ``line`` (a newline is added; it must contain none) to ``path`` as one write
    followed by ``fsync`` (see the module docstring for why this never leaves a torn line)."""
    if "\n" in line or "\r" in line:
        raise ValueError("append_line_atomic appends one line; the text holds a line break")
    data = (line + "\n").encode(encoding)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            _remove_torn_tail(fd, written)
            raise OSError(f"{path}: wrote {written} of {len(data)} bytes of a line; the partial line was removed")
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_torn_tail(fd: int, written: int) -> None:
    """After a short append of ``written`` bytes, cut them off when they are still the file's
    tail (another appender's later line is never cut; best effort on errors)."""
    try:
        position = os.lseek(fd, 0, os.SEEK_CUR)
        if os.fstat(fd).st_size == position and written > 0:
            os.ftruncate(fd, position - written)
    except OSError:
        pass


__all__ = [
    "append_line_atomic",
    "atomic_output",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
