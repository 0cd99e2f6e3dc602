"""The full validation list of one dataset, written by the split stage beside the K-shot manifests.

Written only when the suite selects on ``full_val`` (:mod:`clipbench.selection`) and the dataset has a
validation split of its own; the extract stage then encodes these images (test transform) into the fit cache's
``val`` rows next to the few-shot validation images. It lives in a subfolder of the manifests' folder, so readers
of ``<splits>/*.json`` never take it for a manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from clipbench.data.base import Record
from clipbench.errors import DataError
from clipbench.io import atomic_write_text
from clipbench.typed import stable_hash

SCHEMA = "clipbench.full_val/1"
FILE = Path("selection") / "full_val.json"


def _payload(dataset: str, val: tuple[Record, ...]) -> dict:
    return {"schema": SCHEMA, "dataset": dataset, "val": [[r.path, r.label, r.classname] for r in val]}


def write_full_val(dataset: str, val: tuple[Record, ...], splits_dir: Path) -> Path:
    path = Path(splits_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _payload(dataset, val)
    return atomic_write_text(path, json.dumps({**payload, "hash": stable_hash(payload)}, indent=0) + "\n")


def read_full_val(splits_dir: Path) -> tuple[Record, ...]:
    """The records of ``<splits_dir>/selection/full_val.json``; empty if the split stage wrote none."""
    path = Path(splits_dir) / FILE
    if not path.is_file():
        return ()
    try:
        raw = json.loads(path.read_text())
        val = tuple(Record(str(p), int(lbl), str(c)) for p, lbl, c in raw["val"])
        ok = raw.get("schema") == SCHEMA and raw.get("hash") == stable_hash(_payload(raw["dataset"], val))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"full validation list {path} is malformed ({exc!r}); run `dvc repro split`") from exc
    if not ok:
        raise DataError(f"full validation list {path} fails its schema/hash check; delete it and run `dvc repro split`")
    return val
