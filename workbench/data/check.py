"""``check_data(spec)``: read every split of a dataset, open every image, and summarise.

Any problem is raised as one ``DatasetError`` (the first found) naming the file and the image
or annotation; a clean dataset gives a ``DataReport`` whose ``format()`` is a table with one
column per split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from workbench.data.dataset import AnnotationSummary
from workbench.data.sources import list_sources

ROWS = (
    ("images", "images"),
    ("annotations", "annotations"),
    ("empty images", "empty_images"),
    ("clipped boxes", "clipped"),
    ("dropped boxes", "dropped"),
    ("ignored (crowd/difficult)", "ignored"),
)


@dataclass
class SplitReport:
    """One split: where it was read from, its format and its ``AnnotationSummary``."""

    split: str
    kind: str
    location: str
    summary: AnnotationSummary


@dataclass
class DataReport:
    """The result of ``check_data``: one ``SplitReport`` per split found."""

    spec: str
    splits: list[SplitReport]

    def to_dict(self) -> dict:
        return {"spec": self.spec, "splits": [dataclasses.asdict(s) for s in self.splits]}

    def format(self) -> str:
        """A readable table: counts per split, then boxes per class."""
        lines = [f"dataset {self.spec}: {len(self.splits)} split(s), every image opens"]
        for s in self.splits:
            lines.append(f"  {s.split}: {s.kind} {s.location}")
        names = [s.split for s in self.splits]
        rows = [(label, [getattr(s.summary, attr) for s in self.splits]) for label, attr in ROWS]
        classes: list[str] = []
        for s in self.splits:
            classes += [c for c in s.summary.per_class if c not in classes]
        rows.append(("boxes per class:", [""] * len(names)))
        rows += [(f"  {c}", [s.summary.per_class.get(c, 0) for s in self.splits]) for c in classes]
        first = max(len(label) for label, _ in rows)
        widths = [max(len(n), *(len(str(v[i])) for _, v in rows)) for i, n in enumerate(names)]
        header = " " * first + "".join(f"  {n:>{w}}" for n, w in zip(names, widths))
        lines += ["", header]
        for label, values in rows:
            lines.append(f"{label:<{first}}" + "".join(f"  {str(v):>{w}}" for v, w in zip(values, widths)))
        return "\n".join(lines)


def check_data(spec: str, image_dir: str | Path | None = None, progress: bool = False) -> DataReport:
    """Read every split of ``spec`` (see ``workbench.data.sources``), verify every image opens
    and has the size its annotations give, and report the counts."""
    reports = []
    for source in list_sources(str(spec), image_dir, progress):
        dataset = source.open()
        dataset.verify_images(progress=progress)
        reports.append(SplitReport(source.split, source.kind, str(source.location), dataset.summary))
    return DataReport(str(spec), reports)
