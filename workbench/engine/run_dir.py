"""The run directory: one folder per run.

```
RUN/
  config.json          the resolved TrainConfig
  metrics.jsonl        one JSON object per line: {"kind": "train" | "eval", ...}
  checkpoints/last.pt  written at every epoch end and on SIGINT / SIGTERM
  checkpoints/best.pt  the checkpoint with the best validation AP so far
  eval/epoch_<E>.json  COCO metrics after each epoch
  predictions/         COCO results files and traces written by `workbench predict`
  notebooks/           executed notebooks
```

Every write goes through :mod:`workbench.atomic`: whole files (config, eval files, the
metrics file when a resumed run truncates it) are replaced atomically; a metrics line is
appended with one ``O_APPEND`` write and ``fsync`` (:func:`~workbench.atomic.append_line_atomic`),
and :meth:`RunDir.read_metrics` ignores a last line without its newline (a process killed inside
that write), so a torn line is never read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.atomic import append_line_atomic, write_json_atomic, write_text_atomic
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last_checkpoint(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    def checkpoint(self, which: str) -> Path:
        if which in ("last", "best"):
            return self.root / "checkpoints" / f"{which}.pt"
        return Path(which)

    def eval_file(self, epoch: int) -> Path:
        return self.root / "eval" / f"epoch_{epoch}.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    def create(self) -> None:
        for sub in ("checkpoints", "eval", "predictions"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def write_config(self, config: dict[str, Any]) -> Path:
        """Write the resolved config (``config.json``) atomically."""
        return write_json_atomic(self.config, config, indent=2, sort_keys=True)

    def write_eval(self, epoch: int, metrics: dict[str, Any]) -> Path:
        """Write the evaluation of ``epoch`` (``eval/epoch_<E>.json``) atomically."""
        return write_json_atomic(self.eval_file(epoch), metrics, indent=2)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line (non-finite floats become ``null``), never torn."""
        append_line_atomic(self.metrics, json.dumps(_finite(record), sort_keys=True))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``; a last line without its newline is left out."""
        if not self.metrics.exists():
            return []
        text = self.metrics.read_text()
        lines = text.split("\n")[:-1]  # the part after the last newline is torn or empty
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics_after(self, global_step: int) -> None:
        """Drop records logged after ``global_step`` (a resumed run re-logs them); the file is
        replaced atomically."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= global_step]
        write_text_atomic(self.metrics, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def read_config(self) -> dict[str, Any]:
        if not self.config.exists():
            raise WorkbenchError(f"{self.root}: not a run directory (no config.json)")
        return json.loads(self.config.read_text())


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """Top-level non-finite floats -> ``None`` (JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
