"""Writing a file so that readers see either the old or the complete new content: write a
temporary file beside it, then rename it over the target (``os.replace`` is atomic on one file
system). A process killed half-way leaves the previous file intact."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` (parent folders created) through ``<name>.tmp`` and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


__all__ = ["write_text_atomic"]
