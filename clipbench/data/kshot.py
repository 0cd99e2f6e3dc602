"""Few-shot subsets and base/new class splits, following the CoOp/Dassl procedure.

Sampling (methods-and-protocols.md §4.1): a Python ``random`` stream seeded with the seed draws the train
subset and then, from the same stream, the validation subset with ``min(K, 4)`` images per class. Within a
split, items are grouped by label in order of first appearance; each class with at least K items contributes
``random.sample(items, K)``, smaller classes keep all their items. ``random.Random(seed)`` yields the same
stream as ``random.seed(seed)`` followed by module-level calls, so subsets equal the reference pickles.

A dataset without a validation split (ImageNet, whose CoOp ``val`` object is the test set) gets its
validation subset from the training images not chosen as shots, drawn after the shots from the same stream
with the same procedure (spec §8 item 13; a documented deviation from CoOp, which validates on test).

Base/new (§5.2): applied after sampling; the sorted labels of the few-shot train list are cut at
``ceil(n / 2)``; each half is relabelled 0..m-1 in order.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from clipbench.data.base import Record
from clipbench.errors import DataError
from clipbench.io import atomic_write_text
from clipbench.typed import stable_hash

SCHEMA = "clipbench.kshot/1"


def val_shots(shots: int) -> int:
    """Validation images per class for a K-shot subset (Dassl: ``min(K, 4)``)."""
    return min(shots, 4)


def sample_per_class(items: tuple[Record, ...], k: int, rng: random.Random) -> tuple[Record, ...]:
    """Dassl ``generate_fewshot_dataset`` with ``repeat=False`` for one list."""
    groups: dict[int, list[Record]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    out: list[Record] = []
    for members in groups.values():
        out.extend(rng.sample(members, k) if len(members) >= k else members)
    return tuple(out)


def short_classes(items: tuple[Record, ...], k: int) -> dict[str, int]:
    """Classes with fewer than ``k`` items (``{label: (classname, count)}``); the sampler keeps all their items."""
    counts: dict[int, tuple[str, int]] = {}
    for item in items:
        counts[item.label] = (item.classname, counts.get(item.label, ("", 0))[1] + 1)
    return {label: v for label, v in counts.items() if v[1] < k}


@dataclass(frozen=True)
class KShotSplit:
    """A K-shot train subset and its validation subset, for one dataset and seed."""

    dataset: str
    shots: int
    seed: int
    train: tuple[Record, ...]
    val: tuple[Record, ...]

    @property
    def hash(self) -> str:
        return stable_hash(self._payload(), 16)

    def _payload(self) -> dict:
        rows = lambda rs: [[r.path, r.label, r.classname] for r in rs]  # noqa: E731
        return {
            "schema": SCHEMA,
            "dataset": self.dataset,
            "shots": self.shots,
            "seed": self.seed,
            "train": rows(self.train),
            "val": rows(self.val),
        }

    def to_json(self) -> str:
        return json.dumps({**self._payload(), "hash": self.hash}, indent=0, sort_keys=True) + "\n"


def make_kshot(dataset: str, train: tuple[Record, ...], val: tuple[Record, ...], shots: int, seed: int) -> KShotSplit:
    """The CoOp few-shot subset for ``(shots, seed)``; an empty ``val`` is drawn from the unused training images."""
    if shots <= 0:
        raise ValueError(f"shots must be a positive integer, got {shots}")
    rng = random.Random(seed)
    few_train = sample_per_class(train, shots, rng)
    if not val:
        chosen = set(few_train)
        val = tuple(r for r in train if r not in chosen)
    few_val = sample_per_class(val, val_shots(shots), rng)
    return KShotSplit(dataset, shots, seed, few_train, few_val)


def manifest_name(shots: int, seed: int) -> str:
    return f"shot{shots}_seed{seed}.json"


def write_manifest(split: KShotSplit, directory: Path) -> Path:
    path = Path(directory) / manifest_name(split.shots, split.seed)
    atomic_write_text(path, split.to_json())
    return path


def read_manifest(path: Path) -> KShotSplit:
    """Load a manifest written by :func:`write_manifest`, verifying its schema and content hash."""
    if not path.is_file():
        raise DataError(f"split manifest {path} is missing; run `dvc repro split` to create it")
    try:
        raw = json.loads(path.read_text())
        rec = lambda rows: tuple(Record(str(p), int(lbl), str(c)) for p, lbl, c in rows)  # noqa: E731
        split = KShotSplit(raw["dataset"], int(raw["shots"]), int(raw["seed"]), rec(raw["train"]), rec(raw["val"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"split manifest {path} is malformed ({exc!r}); delete it and run `dvc repro split`") from exc
    if raw.get("schema") != SCHEMA or raw.get("hash") != split.hash:
        raise DataError(
            f"split manifest {path} fails its schema/hash check; it was edited or corrupted. "
            "Delete it and run `dvc repro split`"
        )
    return split


def base_new_labels(train_labels: set[int] | list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Base and new label tuples: the first ``ceil(n/2)`` sorted labels, and the rest."""
    labels = sorted(set(train_labels))
    m = math.ceil(len(labels) / 2)
    return tuple(labels[:m]), tuple(labels[m:])


def subset_labels(split: KShotSplit, subset: str) -> tuple[int, ...]:
    """Labels a cell of ``subset`` trains on: every label of the K-shot train list ("all"), or its base half."""
    labels = tuple(sorted({r.label for r in split.train}))
    return labels if subset == "all" else base_new_labels(labels)[0]


def relabel(records: tuple[Record, ...], labels: tuple[int, ...]) -> tuple[Record, ...]:
    """Keep records whose label is in ``labels`` and renumber them by position in ``labels``."""
    index = {old: new for new, old in enumerate(labels)}
    return tuple(Record(r.path, index[r.label], r.classname) for r in records if r.label in index)
