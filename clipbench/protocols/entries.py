"""Building blocks of table entries: one cell's statistics, and averages or H derived from several entries.

An entry is one number of a protocol table (a dict with the columns of :data:`clipbench.report.ENTRY_COLUMNS`).
A derived entry is computed only when every part is ``ok``: over a missing or failed part it is
``incomplete``, over an n/a part ``n/a``, and never computed on fewer parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def harmonic(base: float, new: float) -> float:
    if any(map(math.isnan, (base, new))) or base + new == 0:
        return math.nan
    return 2 * base * new / (base + new)


def harmonic_of(values: list[float]) -> float:
    """H of ``[base, new]``."""
    return harmonic(*values)


def mean(values: list[float]) -> float:
    return float(np.mean(values))


def _combined_status(entries: list[dict]) -> str:
    found = {e["status"] for e in entries}
    if found & {"missing", "failed", "incomplete"}:
        return "incomplete"
    return "n/a" if "n/a" in found else "ok"


def _blank(**key) -> dict:
    return {
        "mean": math.nan,
        "std": math.nan,
        "n": 0,
        "n_expected": 0,
        "ci95_low": math.nan,
        "ci95_high": math.nan,
        "cells_ok": math.nan,
        "cells_total": math.nan,
        "datasets": "",
        **key,
    }


def cell_entry(stats: pd.DataFrame, key: dict, column: str, label: str) -> dict:
    """The entry of one cell (``missing`` with n = 0 when the cell has no row at all)."""
    match = stats[
        (stats.method == key["method"])
        & (stats.backbone == key["backbone"])
        & (stats.source == key["source"])
        & (stats.shots == key["shots"])
        & (stats.dataset == column)
        & (stats.metric == key["metric"])
    ]
    base = {**key, "column": column, "kind": "cell", "label": label}
    if match.empty:
        return _blank(**base, status="missing")
    c = match.iloc[0]
    return {
        **_blank(**base),
        "mean": c["mean"],
        "std": c["std"],
        "n": int(c["n"]),
        "n_expected": int(c.n_expected),
        "ci95_low": c.ci95_low,
        "ci95_high": c.ci95_high,
        "status": c.status,
    }


def derived(
    parts: list[dict], key: dict, column: str, label: str, kind: str, value: Callable[[list[float]], float]
) -> dict:
    """An average (``kind="average"``) or harmonic mean (``kind="H"``) over ``parts``; NaN unless all ok."""
    status = _combined_status(parts)
    ok = sum(p["status"] == "ok" for p in parts)
    result = value([p["mean"] for p in parts]) if status == "ok" else math.nan
    if kind == "average":
        datasets = ";".join(sorted({p["column"] for p in parts}))
    else:  # H: the datasets its base and new average over (none for a per-dataset H)
        datasets = ";".join(sorted({d for p in parts for d in p["datasets"].split(";") if d}))
    return {
        **_blank(**key, column=column, kind=kind, label=label),
        "mean": result,
        "status": status,
        "cells_ok": ok,
        "cells_total": len(parts),
        "datasets": datasets,
    }
