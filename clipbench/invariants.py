"""Invariants gated by ``clipbench check``: exact per-cell numbers that are bit-deterministic on one runtime.

* Training: a training cell's diagnostics (``cell.json`` ``diagnostics``, repeated in the ``diagnostics`` column of
  every result row it produced) hold counts (``steps``, ``trainable_params``, epochs), selected hyper-parameters,
  final losses and regulariser magnitudes.
* Evaluation: the accuracy and the number of test images of every evaluation cell. Table metrics are averages
  gated within a tolerance; a bug that moves a few predictions in many cells (a class that can never be predicted,
  a miscounted denominator, a slightly different text classifier) stays inside it, but not inside an exact value.

On one machine (one runtime) all of these are bit-deterministic, so any change is a change of behaviour.

Names carry the training cell (``all_shot16_seed1``); where per-protocol settings train one cell under several
configs (rows of the cell with different ``config_hash``), the model of the first protocol in registry order keeps
the plain name and each other carries ``-<protocol>``, the first protocol using it, so each model keeps its own
entries whatever the row order (without overrides: no suffix).
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


def cell_names(results: pd.DataFrame) -> list[str]:
    """Each row's training-cell name, suffixed where one cell was trained under several configs (module doc)."""
    names = [
        TrainCell(r.source, r.train_subset, int(r.shots), int(r.seed)).name
        for r in results[["source", "train_subset", "shots", "seed"]].itertuples(index=False)
    ]
    if not {"config_hash", "protocol"} <= set(results.columns):
        return names
    from clipbench.protocols import REGISTRY

    rank = {name: i for i, name in enumerate(REGISTRY.in_order())}
    rows = list(results[["backbone", "method", "source", "config_hash", "protocol"]].itertuples(index=False))
    configs: dict[tuple, dict[str, str]] = {}  # (backbone, method, source, cell) -> config hash -> suffix
    for i in sorted(range(len(rows)), key=lambda i: (rank.get(rows[i].protocol, len(rank)), i)):
        row = rows[i]
        seen = configs.setdefault((row.backbone, row.method, row.source, names[i]), {})
        names[i] += seen.setdefault(row.config_hash, f"-{row.protocol}" if seen else "")
    return names


def training_invariants(results: pd.DataFrame) -> dict[str, int | float]:
    """``backbone/method/source/<train cell>/<diagnostic>`` -> value, one entry per training cell and diagnostic."""
    out: dict[str, int | float] = {}
    named = results[CELL_COLUMNS].assign(cell=cell_names(results))
    cells = named.dropna(subset=["diagnostics"]).drop_duplicates()
    for row in cells.itertuples(index=False):
        cell = row.cell
        for name, value in _numbers(row.diagnostics).items():
            out[f"{row.backbone}/{row.method}/{row.source}/{cell}/{name}"] = value
    return dict(sorted(out.items()))


EVAL_COLUMNS = ["backbone", "method", "source", "train_subset", "shots", "seed", "dataset", "subset"]


def evaluation_invariants(results: pd.DataFrame) -> dict[str, int | float]:
    """``backbone/method/source/<train cell>/eval/<dataset>/<subset>/{accuracy,n}`` per scored evaluation cell (a
    cell shared by several protocols appears once)."""
    named = results[[*EVAL_COLUMNS, "status", "value", "n"]].assign(cell=cell_names(results))
    scored = named[named["status"] == "ok"].drop_duplicates(subset=[*EVAL_COLUMNS, "cell"])
    out: dict[str, int | float] = {}
    for row in scored.itertuples(index=False):
        name = f"{row.backbone}/{row.method}/{row.source}/{row.cell}/eval/{row.dataset}/{row.subset}"
        out[f"{name}/accuracy"], out[f"{name}/n"] = float(row.value), int(row.n)
    return dict(sorted(out.items()))


def run_invariants(results: pd.DataFrame) -> dict[str, int | float]:
    """Every invariant of a run: training diagnostics and evaluation counts (``reports/invariants.json``)."""
    return {**training_invariants(results), **evaluation_invariants(results)}
