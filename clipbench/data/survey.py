"""Which datasets are present under a ``data_root``, valid, and how large (the ``clipbench datasets`` listing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipbench.data import DATASETS, get_dataset
from clipbench.data.coop import CoopSpec, validate
from clipbench.data.integrity import content_duplicates
from clipbench.errors import ClipbenchError


@dataclass(frozen=True)
class DatasetStatus:
    name: str
    status: str  # "found" | "missing" | "invalid" | "generated" (toy data, created by `dvc repro download`)
    directory: Path
    counts: dict[str, int] | None = None  # classes, train, val, test when found
    detail: str = ""  # what is missing / wrong and how to fix it; for a found dataset, its duplicate images


def survey(data_root: Path, names: list[str] | None = None, counts: str = "exact") -> list[DatasetStatus]:
    """The status of ``names`` (default: every registered dataset) under ``data_root``."""
    return [dataset_status(name, Path(data_root), counts) for name in (names or DATASETS.names())]


def dataset_status(name: str, data_root: Path, counts: str = "exact") -> DatasetStatus:
    spec = get_dataset(name)
    directory = spec.root(data_root)
    if not isinstance(spec, CoopSpec) and not spec.is_ready(data_root):
        return DatasetStatus(name, "generated", directory, detail=f"created by `dvc repro download@{name}`")
    if isinstance(spec, CoopSpec) and spec.missing(data_root) and not directory.exists():
        return DatasetStatus(name, "missing", directory, detail=spec.fix)
    try:
        splits = validate(spec, data_root, counts)
    except ClipbenchError as exc:
        return DatasetStatus(name, "invalid", directory, detail=str(exc))
    sizes = {
        "classes": len(splits.class_ids),
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
    }
    duplicates = content_duplicates(spec.images(data_root), splits).summary()
    return DatasetStatus(name, "found", directory, sizes, f"duplicates: {duplicates}" if duplicates else "")


def render(rows: list[DatasetStatus]) -> str:
    """A plain-text table, with the fix under every missing or invalid dataset."""
    lines = [f"{'dataset':21} {'status':9} {'classes':>7} {'train':>9} {'val':>7} {'test':>7}  folder"]
    for r in rows:
        c = r.counts or {}
        cells = [f"{c[k]:,}" if k in c else "-" for k in ("classes", "train", "val", "test")]
        lines.append(f"{r.name:21} {r.status:9} {cells[0]:>7} {cells[1]:>9} {cells[2]:>7} {cells[3]:>7}  {r.directory}")
        if r.status in ("missing", "invalid") or (r.status == "found" and r.detail):
            lines.append(f"    {r.detail}")
    return "\n".join(lines)
