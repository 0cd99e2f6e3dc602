"""Training invariants: the exact numeric diagnostics of every training cell, gated by ``clipbench check``.

A training cell's diagnostics (``cell.json`` ``diagnostics``, repeated in the ``diagnostics`` column of every result
row it produced) hold counts (``steps``, ``trainable_params``, epochs), selected hyper-parameters, final losses and
regulariser magnitudes. On one machine they are bit-deterministic, so any change is a change of behaviour.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from clipbench.cells import TrainCell

CELL_COLUMNS = ["backbone", "method", "source", "train_subset", "shots", "seed", "diagnostics"]


def _numbers(diagnostics: str) -> dict[str, int | float]:
    """Finite numeric entries of one JSON diagnostics object (integers stay integers; booleans become 0/1)."""
    out = {}
    for name, value in json.loads(diagnostics).items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
            out[name] = value
    return out


def training_invariants(results: pd.DataFrame) -> dict[str, int | float]:
    """``backbone/method/source/<train cell>/<diagnostic>`` -> value, one entry per training cell and diagnostic."""
    out: dict[str, int | float] = {}
    cells = results[CELL_COLUMNS].dropna(subset=["diagnostics"]).drop_duplicates()
    for row in cells.itertuples(index=False):
        cell = TrainCell(row.source, row.train_subset, int(row.shots), int(row.seed)).name
        for name, value in _numbers(row.diagnostics).items():
            out[f"{row.backbone}/{row.method}/{row.source}/{cell}/{name}"] = value
    return dict(sorted(out.items()))
