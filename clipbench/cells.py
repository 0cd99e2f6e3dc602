"""Protocol cells and the content-keyed cell store that makes stages incremental below DVC's granularity.

A DVC stage covers many cells (e.g. every shot count and seed of one method on one dataset). Each cell is
stored in its own directory together with the *key* of everything it was computed from (config hash, split
manifest hash, feature key, code fingerprint). When the stage re-runs, cells whose key is unchanged are kept
and only new or invalidated cells are computed; cells no longer planned are removed. Stage outputs are
declared ``persist: true`` so DVC leaves them in place for this check. Each cell directory is sealed
(:mod:`clipbench.seal`): a cell whose files changed after it was written is recomputed, never reused.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipbench import seal
from clipbench.io import atomic_directory

KEY_FILE = "cell.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class TrainCell:
    """One training run: a method fitted on ``subset`` ("all" or "base") of a K-shot split."""

    dataset: str
    subset: str
    shots: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.subset}_shot{self.shots}_seed{self.seed}"


@dataclass(frozen=True, order=True)
class EvalCell:
    """One evaluation: a trained cell scored on ``subset`` ("all", "base" or "new") of ``dataset``'s test split."""

    protocol: str
    train: TrainCell
    dataset: str
    subset: str
    metric: str

    @property
    def name(self) -> str:
        return f"{self.protocol}__{self.train.dataset}__{self.train.name}__{self.dataset}__{self.subset}"

    def as_row(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "source": self.train.dataset,
            "train_subset": self.train.subset,
            "shots": self.train.shots,
            "seed": self.train.seed,
            "dataset": self.dataset,
            "subset": self.subset,
            "metric": self.metric,
        }


class CellStore:
    """Directory of cell directories, each holding ``cell.json`` with its key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def read(self, name: str) -> dict | None:
        """The cell's record, or ``None`` when it is missing or fails its seal (so it is recomputed)."""
        file = self.path(name) / KEY_FILE
        if not file.is_file():
            return None
        problem = self.damage(name)
        if problem:
            log.warning("cell %s is recomputed: %s", self.path(name), problem)
            return None
        try:
            return json.loads(file.read_text())
        except json.JSONDecodeError:
            return None

    def damage(self, name: str) -> str | None:
        """What differs from the cell's seal (``None``: intact); see :mod:`clipbench.seal`."""
        return seal.damage(self.path(name))

    def is_current(self, name: str, key: str) -> bool:
        record = self.read(name)
        return record is not None and record.get("key") == key

    def put(self, name: str, key: str, write: Callable[[Path], dict]) -> dict:
        """Run ``write(tmp_dir) -> info`` and publish the directory with its key, atomically."""
        with atomic_directory(self.path(name)) as tmp:
            info = write(tmp)
            record = {"key": key, **info}
            (tmp / KEY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
            seal.seal(tmp)
        return record

    def prune(self, keep: set[str]) -> list[str]:
        """Remove cell directories not in ``keep`` (and stray temporary directories)."""
        removed = []
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.name not in keep:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
                    removed.append(child.name)
        return removed


def cell_dict(cell: TrainCell) -> dict:
    return asdict(cell)
