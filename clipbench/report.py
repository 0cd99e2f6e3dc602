"""Protocol tables computed from the result table (pure functions of DataFrames; no I/O).

Aggregation follows spec §5.5. A *cell* is (protocol, method, backbone, source, shots, dataset, metric); its
statistics over seeds are the mean, the population std (``np.std``, as CoOp's parser), n and the 95% interval
mean ± 1.96·std/√n (CoOp's optional CI), all over the seeds whose status is ``ok``. A cell's status is
``ok`` (every expected seed ok), ``n/a`` (the method has no answer there), ``missing`` (an expected result is
absent) or ``failed`` (a result row whose status is neither ok nor n/a). A cell with some seeds missing
keeps the mean of the seeds it has, shown with its n.

Each protocol builds its table *entries* from these statistics (``clipbench/protocols/<name>.py``): the
cells, and averages (plain means of per-dataset means) or H values derived from them. An average or H over a
missing or failed cell is ``incomplete`` and an average over an n/a cell is ``n/a``: neither is ever computed
on fewer cells (:mod:`clipbench.protocols.entries`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clipbench.protocols import all_protocols, get_protocol
from clipbench.results import KEY_COLUMNS

GROUP = ["protocol", "method", "backbone", "source", "shots", "dataset", "metric"]
STATUSES = ("ok", "n/a", "missing", "failed")
Z95 = 1.96
ENTRY_COLUMNS = [
    "protocol",
    "method",
    "backbone",
    "source",
    "shots",
    "column",
    "metric",
    "kind",
    "label",
    "mean",
    "std",
    "n",
    "n_expected",
    "ci95_low",
    "ci95_high",
    "status",
    "cells_ok",
    "cells_total",
    "datasets",
]


def infer_expected(results: pd.DataFrame) -> pd.DataFrame:
    """The plan implied by ``results`` when none is given: per (protocol, backbone), every method present times
    every (source, subset, shots, seed, dataset, metric) combination any method has."""
    parts = []
    for _, g in results.groupby(["protocol", "backbone"], sort=True):
        cells = g.drop(columns="method")[[k for k in KEY_COLUMNS if k != "method"] + ["metric"]].drop_duplicates()
        parts.append(pd.DataFrame({"method": sorted(set(g.method))}).merge(cells, how="cross"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=KEY_COLUMNS + ["metric"])


def complete(results: pd.DataFrame, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """``results`` plus a ``missing`` row (value NaN) for each planned row it lacks; odd statuses -> ``failed``.

    ``expected`` is the plan (one row per method, backbone, cell and seed); ``None`` infers it from ``results``.
    """
    results = results.assign(status=results.status.where(results.status.isin(["ok", "n/a"]), "failed"))
    expected = infer_expected(results) if expected is None else expected
    if expected.empty:
        return results
    keys = KEY_COLUMNS + ["metric"]
    have = results[keys].drop_duplicates()
    absent = expected[keys].merge(have, on=keys, how="left", indicator=True)
    absent = absent[absent["_merge"] == "left_only"].drop(columns="_merge")
    if absent.empty:
        return results
    absent = absent.assign(value=math.nan, status="missing", note="result absent")
    return pd.concat([results, absent], ignore_index=True)


def _cell(g: pd.DataFrame) -> pd.Series:
    g = g.sort_values("seed", kind="stable")
    values = g[g.status == "ok"].value.to_numpy(dtype=float)
    n = len(values)
    mean = float(np.mean(values)) if n else math.nan
    std = float(np.std(values)) if n else math.nan
    half = Z95 * std / math.sqrt(n) if n else math.nan
    found = set(g.status)
    status = next((s for s in ("failed", "missing", "n/a") if s in found), "ok")
    seeds = {s: ",".join(str(int(v)) for v in g[g.status == s].seed) for s in ("missing", "failed")}
    return pd.Series(
        {
            "mean": mean,
            "std": std,
            "n": n,
            "n_expected": len(g),
            "ci95": half,
            "ci95_low": mean - half,
            "ci95_high": mean + half,
            "status": status,
            "missing_seeds": seeds["missing"],
            "failed_seeds": seeds["failed"],
        }
    )


def cell_stats(results: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean, population std, n (ok seeds), n_expected, 95% interval, status, missing seeds."""
    if results.empty:
        return pd.DataFrame(
            columns=GROUP
            + [
                "mean",
                "std",
                "n",
                "n_expected",
                "ci95",
                "ci95_low",
                "ci95_high",
                "status",
                "missing_seeds",
                "failed_seeds",
            ]
        )
    frame = results.groupby(GROUP, dropna=False, sort=True).apply(_cell, include_groups=False).reset_index()
    return frame.astype({"n": int, "n_expected": int, "shots": int})


def entries(stats: pd.DataFrame) -> pd.DataFrame:
    """Every number the protocol tables show, one row each (columns :data:`ENTRY_COLUMNS`), protocols in
    registry order."""
    rows = [e for p in all_protocols() for e in p.entries(stats[stats.protocol == p.name])]
    frame = pd.DataFrame(rows, columns=ENTRY_COLUMNS)
    return frame.astype({"shots": int, "n": int, "n_expected": int})


def fmt_entry(e: dict) -> str:
    """The Markdown text of one entry: ``mean ± std``, a status word, or a marked partial cell."""
    status, kind = e["status"], e["kind"]
    if kind != "cell":
        if status == "ok":
            return f"{e['mean']:.2f}"
        return "n/a" if status == "n/a" else f"incomplete ({int(e['cells_ok'])}/{int(e['cells_total'])})"
    if status == "n/a" or (status == "missing" and e["n"] == 0) or (status == "failed" and e["n"] == 0):
        return status
    text = f"{e['mean']:.2f} ± {e['std']:.2f}"
    return text if status == "ok" else f"{text} (n={e['n']}/{e['n_expected']}, {status})"


def _seed_range(cells: pd.DataFrame) -> str:
    ns = cells[(cells.kind == "cell") & (cells.n > 0)].n
    if ns.empty:
        return "0"
    return str(ns.min()) if ns.min() == ns.max() else f"{ns.min()}–{ns.max()}"


def wide_table(table_entries: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The display table of one protocol: a row per (method, backbone[, source], shots), a column per label."""
    e = table_entries[table_entries.protocol == protocol]
    if e.empty:
        return pd.DataFrame()
    keys = list(get_protocol(protocol).table_keys)
    rows = []
    for values, g in e.groupby(keys, sort=True):
        row = {k: (int(v) if k == "shots" else v) for k, v in zip(keys, values, strict=True)}
        row["seeds (n)"] = _seed_range(g)
        row.update({r["label"]: fmt_entry(r) for r in g.to_dict("records")})
        rows.append(row)
    labels = list(dict.fromkeys(e.label))
    return pd.DataFrame(rows).reindex(columns=keys + ["seeds (n)"] + labels).fillna("missing")


def published_table(matched: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Rows of ``matched`` (entries after :func:`clipbench.reference.match`) that have a published value."""
    m = matched[(matched.protocol == protocol) & matched.published.notna()]
    rows = [
        {
            "method": r["method"],
            "backbone": r["backbone"],
            "shots": int(r["shots"]),
            "dataset": r["column"],
            "metric": r["metric"],
            "reproduced": fmt_entry(r),
            "published": r["published_printed"],
            "delta": "" if math.isnan(r["delta"]) else f"{r['delta']:+.2f}",
            "source": r["published_paper"],
            "caveat": r["published_note"],
        }
        for r in m.to_dict("records")
    ]
    return pd.DataFrame(rows)


def metrics_tree(stats: pd.DataFrame, table_entries: pd.DataFrame | None = None) -> dict:
    """``{protocol: {backbone: {method: {dataset: {setting: mean}}}}}`` of complete cells and derived entries.

    ``setting`` is the protocol's name for the metric (:meth:`~clipbench.protocols.base.Protocol.setting`);
    derived entries add the ``average`` dataset (every protocol) and ``H`` (base-to-new). Incomplete, n/a,
    missing and failed entries are left out.
    """
    tree: dict = {}

    def put(protocol, backbone, method, dataset, shots, metric, value):
        setting = get_protocol(protocol).setting(shots, metric)
        node = tree.setdefault(protocol, {}).setdefault(backbone, {}).setdefault(method, {})
        node.setdefault(dataset, {})[setting] = round(float(value), 4)

    for _, c in stats[stats.status == "ok"].iterrows():
        put(c.protocol, c.backbone, c.method, c.dataset, c.shots, c.metric, c["mean"])
    if table_entries is not None:
        derived = table_entries[(table_entries.kind != "cell") & (table_entries.status == "ok")]
        for _, e in derived.iterrows():
            put(e.protocol, e.backbone, e.method, e.column, e.shots, e.metric, e["mean"])
    return tree


def completeness(stats: pd.DataFrame) -> pd.DataFrame:
    """The completeness matrix: a row per (protocol, source, shots, dataset, metric), a column per method/backbone."""
    if stats.empty:
        return pd.DataFrame()
    s = stats.assign(who=stats.method + "/" + stats.backbone)

    def word(c) -> str:
        if c.status in ("ok", "n/a"):
            return c.status
        detail = "; ".join(f"{k} seed {v}" for k, v in (("missing", c.missing_seeds), ("failed", c.failed_seeds)) if v)
        return f"{c.status.upper()} {c.n}/{c.n_expected} ({detail})"

    s = s.assign(state=[word(c) for c in s.itertuples()])
    keys = ["protocol", "source", "shots", "dataset", "metric"]
    wide = s.pivot_table(index=keys, columns="who", values="state", aggfunc="first").reset_index()
    wide.columns.name = None
    return wide.fillna("MISSING (no row)")


def status_counts(results: pd.DataFrame) -> dict[str, int]:
    """How many result rows (one per seed) are ok, n/a, missing or failed."""
    return {s: int((results.status == s).sum()) for s in STATUSES}


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no optional dependency)."""
    if frame.empty:
        return "_no rows_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
