"""The dataset index: a validated, portable JSON listing of one dataset, written by the download stage.

Downstream stages read the index instead of re-listing the raw folder. Paths are relative to the dataset's
image root, which is itself stored relative to ``data_root``, so an index moves with the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clipbench.data.base import DatasetSplits, LabelSpace, Record
from clipbench.errors import DataError
from clipbench.io import atomic_write_text
from clipbench.typed import stable_hash

SCHEMA = "clipbench.index/1"


@dataclass(frozen=True)
class DatasetIndex:
    dataset: str
    image_root: str  # relative to data_root
    splits: DatasetSplits

    @property
    def hash(self) -> str:
        return stable_hash(self._payload())

    def _payload(self) -> dict:
        rows = lambda rs: [[r.path, r.label, r.classname] for r in rs]  # noqa: E731
        s = self.splits
        return {
            "schema": SCHEMA,
            "dataset": self.dataset,
            "image_root": self.image_root,
            "class_ids": list(s.class_ids),
            "classnames": list(s.classnames),
            "train": rows(s.train),
            "val": rows(s.val),
            "test": rows(s.test),
        }

    def label_space(self, templates: tuple[str, ...]) -> LabelSpace:
        return LabelSpace(self.dataset, self.splits.class_ids, self.splits.classnames, templates)

    def write(self, path: Path) -> Path:
        return atomic_write_text(path, json.dumps({**self._payload(), "hash": self.hash}) + "\n")


def load_index(path: Path) -> DatasetIndex:
    """Read an index written by :meth:`DatasetIndex.write` and verify its hash."""
    if not path.is_file():
        raise DataError(f"dataset index {path} is missing; run `dvc repro download@{path.stem}`")
    try:
        raw = json.loads(path.read_text())
        rec = lambda rows: tuple(Record(str(p), int(lbl), str(c)) for p, lbl, c in rows)  # noqa: E731
        splits = DatasetSplits(
            rec(raw["train"]), rec(raw["val"]), rec(raw["test"]), tuple(raw["class_ids"]), tuple(raw["classnames"])
        )
        index = DatasetIndex(raw["dataset"], raw["image_root"], splits)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"dataset index {path} is malformed ({exc!r}); run `dvc repro download@{path.stem}`") from exc
    if raw.get("schema") != SCHEMA or raw.get("hash") != index.hash:
        raise DataError(f"dataset index {path} fails its hash check; run `dvc repro -f download@{path.stem}`")
    return index
