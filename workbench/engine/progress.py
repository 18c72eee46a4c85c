"""Progress of a counted task (images predicted) for a person watching: a tqdm bar on a
terminal, plain lines elsewhere (papermill, pipelines, CI logs), or nothing.

A line reads ``predict+trace 40/200 img, 0.31 s/img, ETA 49s``; one every ``every`` items
(default a tenth of the total) and one at the end.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO


def format_duration(seconds: float | None) -> str:
    """``42s``, ``5m07s``, ``1h03m`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class ProgressLines:
    """``update(n)`` / ``close()`` like a tqdm bar, writing plain lines to ``stream`` (default the
    current ``sys.stderr``)."""

    def __init__(self, total: int, desc: str, unit: str = "img", every: int | None = None,
                 stream: IO[str] | None = None) -> None:
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.every = max(1, every if every is not None else math.ceil(self.total / 10))
        self.stream = stream
        self.count = 0
        self._next = self.every
        self._start = time.perf_counter()
        self._closed = False

    def line(self) -> str:
        elapsed = time.perf_counter() - self._start
        pace = elapsed / self.count if self.count else float("nan")
        eta = (self.total - self.count) * pace if self.count else float("nan")
        return f"{self.desc} {self.count}/{self.total} {self.unit}, {pace:.2f} s/{self.unit}, ETA {format_duration(eta)}"

    def _write(self) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(self.line() + "\n")
        stream.flush()

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.count >= self._next and self.count < self.total:
            self._write()
            while self._next <= self.count:
                self._next += self.every

    def close(self) -> None:
        if not self._closed and self.total:
            self._closed = True
            self._write()


class _Silent:
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


def counted_progress(progress: bool | str, total: int, desc: str, unit: str = "img"):
    """An object with ``update(n)`` and ``close()``: a tqdm bar for ``True`` / ``"bar"``, plain
    lines for ``"lines"``, nothing for ``False`` / ``"off"``; ``"auto"``: a bar on a terminal,
    lines otherwise."""
    if progress == "auto":
        progress = "bar" if sys.stderr.isatty() else "lines"
    if progress is True or progress == "bar":
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit)
    if progress == "lines":
        return ProgressLines(total, desc, unit)
    return _Silent()


__all__ = ["ProgressLines", "counted_progress", "format_duration"]
