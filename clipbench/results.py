"""The result table: one row per (method, backbone, protocol, source, shots, seed, dataset, subset) cell.

Rows are long-format: ``metric`` is ``acc`` (few-shot, cross-dataset, domain generalization) or ``base`` /
``new`` (base-to-new), ``value`` is top-1 accuracy in percent, and ``status`` is ``ok`` or ``n/a`` (the method
has no answer for that cell; ``value`` is NaN and tables print "n/a", never 0).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clipbench.errors import DataError
from clipbench.io import atomic_write

RESULT_FILE = "results.parquet"
KEY_COLUMNS = ["method", "backbone", "protocol", "source", "train_subset", "shots", "seed", "dataset", "subset"]
COLUMNS = KEY_COLUMNS + [
    "metric",
    "value",
    "status",
    "n",
    "note",
    "config_hash",
    "split_hash",
    "feature_key",
    "train_key",
    "eval_key",
    "train_seconds",
    "eval_seconds",
    "diagnostics",
]


def write_results(frame: pd.DataFrame, path: Path) -> Path:
    """Validate the schema and uniqueness of ``frame`` and write it as Parquet atomically."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"result rows lack columns {missing}")
    frame = frame[COLUMNS].sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    dupes = frame.duplicated(KEY_COLUMNS)
    if dupes.any():
        raise ValueError(f"duplicate result cells: {frame[dupes][KEY_COLUMNS].head(3).to_dict('records')}")
    return atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def read_results(paths: list[Path]) -> pd.DataFrame:
    """Concatenate result tables; a missing file is an error naming the stage to run."""
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"result table {path} is missing; run `dvc repro evaluate`")
        frames.append(pd.read_parquet(path))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)
