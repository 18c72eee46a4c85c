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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    def append_metrics(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.metrics.open("a") as f:
            f.write(json.dumps(clean, sort_keys=True) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def truncate_metrics_after(self, global_step: int) -> None:
        """Drop records logged after ``global_step`` (a resumed run re-logs them)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= global_step]
        self.metrics.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def read_config(self) -> dict[str, Any]:
        if not self.config.exists():
            raise WorkbenchError(f"{self.root}: not a run directory (no config.json)")
        return json.loads(self.config.read_text())
