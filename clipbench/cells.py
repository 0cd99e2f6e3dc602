"""Protocol cells and the content-keyed cell store that makes stages incremental below DVC's granularity.

A DVC stage covers many cells (e.g. every shot count and seed of one method on one dataset). Each cell is
stored in its own directory together with the *key* of everything it was computed from (config hash, split
manifest hash, feature key, code fingerprint). When the stage re-runs, cells whose key is unchanged are kept
and only new or invalidated cells are computed; cells no longer planned are removed. Every cell is also
published, by key, into a shared content-keyed store (``.cells/<kind>/<key>/``, or ``$CLIPBENCH_CELL_STORE``):
DVC deletes a stage's outputs before it re-runs the stage, so a re-run restores its unchanged cells from there.
That is why the outputs need no ``persist`` (which DVC's run-cache refuses; see docs/design.md, "Cluster").
Each cell directory is sealed (:mod:`clipbench.seal`): a cell whose files changed after it was written is
recomputed, never reused or restored.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipbench import seal
from clipbench.io import atomic_directory

KEY_FILE = "cell.json"
STORE_ENV = "CLIPBENCH_CELL_STORE"  # where the shared cell store is (default: .cells under the project root)
STORE_DIR = ".cells"
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
class TrainUnit:
    """A training cell as one method trains it, under the config one or more protocols resolve to for it.

    ``variant`` is "" for the method's protocol-free config, whose directory is ``cell.name`` and whose key is
    the cell's key as ever; a protocol override that resolves to another config trains the same cell again, in
    ``<cell.name>-<variant>`` (see :func:`clipbench.protocols.training_units`). The variant enters no key: the
    config (part of every train key) tells the variants apart.
    """

    cell: TrainCell
    variant: str = ""
    config: Any = field(default=None, compare=False, repr=False)  # the method config resolved for the cell

    @property
    def name(self) -> str:
        return f"{self.cell.name}-{self.variant}" if self.variant else self.cell.name


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


def shared_store(root: Path, kind: str) -> Path:
    """The shared store of ``kind`` (train, evaluate) cells for the project at ``root``."""
    return Path(os.environ.get(STORE_ENV) or Path(root) / STORE_DIR) / kind


class CellStore:
    """Directory of cell directories, each holding ``cell.json`` with its key.

    With ``shared``, every cell put is also published as ``shared/<key>/`` and :meth:`restore` copies a stored
    cell back by key, so the cells survive DVC removing the stage output.
    """

    def __init__(self, root: Path, shared: Path | None = None) -> None:
        self.root = Path(root)
        self.shared = Path(shared) if shared is not None else None

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
        self._share(name, key)
        return record

    def restore(self, name: str, key: str) -> bool:
        """Copy the intact shared cell of ``key`` to ``name``; ``False`` when the store has none."""
        if self.shared is None:
            return False
        if not self._intact(key):
            return False
        with atomic_directory(self.path(name)) as tmp:
            shutil.copytree(self.shared / key, tmp, dirs_exist_ok=True)
        return self.is_current(name, key)

    def _intact(self, key: str) -> bool:
        source = self.shared / key
        return (source / KEY_FILE).is_file() and seal.damage(source) is None

    def _share(self, name: str, key: str) -> None:
        """Publish cell ``name`` as ``shared/<key>`` unless it is there intact (another process may publish it)."""
        if self.shared is None or self._intact(key):
            return
        target = self.shared / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=target.parent))
        try:
            shutil.copytree(self.path(name), tmp, dirs_exist_ok=True)
            if target.exists():  # a damaged copy is replaced (readers check the seal: never trusted meanwhile)
                shutil.rmtree(target)
            os.rename(tmp, target)
        except OSError:  # published meanwhile by another process (same key, same content)
            if not (target / KEY_FILE).is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

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
