"""Protocol tables computed from the result table (pure functions of DataFrames; no I/O).

Aggregation follows spec §5.5. A *cell* is (protocol, method, backbone, source, shots, dataset, metric); its
statistics over seeds are the mean, the population std (``np.std``, as CoOp's parser), n and the 95% interval
mean ± 1.96·std/√n (CoOp's optional CI), all over the seeds whose status is ``ok``. A cell's status is
``ok`` (every expected seed ok), ``n/a`` (the method has no answer there), ``missing`` (an expected result is
absent) or ``failed`` (a result row whose status is neither ok nor n/a). A cell with some seeds missing
keeps the mean of the seeds it has, shown with its n.

Derived *entries*: base-to-new H per dataset from the seed-averaged base and new; every average is the plain
mean of per-dataset means (few-shot and base-to-new over the datasets, cross-dataset over the targets with
the source accuracy beside it, domain generalization the OOD average over the targets) and the base-to-new
average H is H(mean base, mean new). An average or H over a missing or failed cell is ``incomplete`` and an
average over an n/a cell is ``n/a``: neither is ever computed on fewer cells.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clipbench.results import KEY_COLUMNS

GROUP = ["protocol", "method", "backbone", "source", "shots", "dataset", "metric"]
STATUSES = ("ok", "n/a", "missing", "failed")
Z95 = 1.96
TRANSFER_LABELS = {"cross_dataset": "target average", "domain_generalization": "OOD average"}
ENTRY_COLUMNS = ["protocol", "method", "backbone", "source", "shots", "column", "metric", "kind", "label", "mean",
                 "std", "n", "n_expected", "ci95_low", "ci95_high", "status", "cells_ok", "cells_total", "datasets"]


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
    return pd.Series({"mean": mean, "std": std, "n": n, "n_expected": len(g), "ci95": half,
                      "ci95_low": mean - half, "ci95_high": mean + half, "status": status,
                      "missing_seeds": seeds["missing"], "failed_seeds": seeds["failed"]})


def cell_stats(results: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean, population std, n (ok seeds), n_expected, 95% interval, status, missing seeds."""
    if results.empty:
        return pd.DataFrame(columns=GROUP + ["mean", "std", "n", "n_expected", "ci95", "ci95_low", "ci95_high",
                                             "status", "missing_seeds", "failed_seeds"])
    frame = results.groupby(GROUP, dropna=False, sort=True).apply(_cell, include_groups=False).reset_index()
    return frame.astype({"n": int, "n_expected": int, "shots": int})


def harmonic(base: float, new: float) -> float:
    if any(map(math.isnan, (base, new))) or base + new == 0:
        return math.nan
    return 2 * base * new / (base + new)


def _combined_status(entries: list[dict]) -> str:
    found = {e["status"] for e in entries}
    if found & {"missing", "failed", "incomplete"}:
        return "incomplete"
    return "n/a" if "n/a" in found else "ok"


def _blank(**key) -> dict:
    return {"mean": math.nan, "std": math.nan, "n": 0, "n_expected": 0, "ci95_low": math.nan,
            "ci95_high": math.nan, "cells_ok": math.nan, "cells_total": math.nan, "datasets": "", **key}


def _cell_entry(stats: pd.DataFrame, key: dict, column: str, label: str) -> dict:
    """The entry of one cell (``missing`` with n = 0 when the cell has no row at all)."""
    match = stats[(stats.method == key["method"]) & (stats.backbone == key["backbone"])
                  & (stats.source == key["source"]) & (stats.shots == key["shots"]) & (stats.dataset == column)
                  & (stats.metric == key["metric"])]
    base = {**key, "column": column, "kind": "cell", "label": label}
    if match.empty:
        return _blank(**base, status="missing")
    c = match.iloc[0]
    return {**_blank(**base), "mean": c["mean"], "std": c["std"], "n": int(c["n"]), "n_expected": int(c.n_expected),
            "ci95_low": c.ci95_low, "ci95_high": c.ci95_high, "status": c.status}


def _derived(parts: list[dict], key: dict, column: str, label: str, kind: str, value) -> dict:
    """An average (``kind="average"``) or harmonic mean (``kind="H"``) over ``parts``; NaN unless all ok."""
    status = _combined_status(parts)
    ok = sum(p["status"] == "ok" for p in parts)
    mean = value([p["mean"] for p in parts]) if status == "ok" else math.nan
    if kind == "average":
        datasets = ";".join(sorted({p["column"] for p in parts}))
    else:  # H: the datasets its base and new average over (none for a per-dataset H)
        datasets = ";".join(sorted({d for p in parts for d in p["datasets"].split(";") if d}))
    return {**_blank(**key, column=column, kind=kind, label=label), "mean": mean, "status": status,
            "cells_ok": ok, "cells_total": len(parts), "datasets": datasets}


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def few_shot_entries(stats: pd.DataFrame) -> list[dict]:
    s = stats[stats.protocol == "few_shot"]
    out: list[dict] = []
    for backbone, b in s.groupby("backbone", sort=True):
        datasets = sorted(set(b.dataset))
        for method in sorted(set(b.method)):
            for shots in sorted(set(b.shots)):
                row = [_cell_entry(b, {"protocol": "few_shot", "method": method, "backbone": backbone, "source": d,
                                       "shots": shots, "metric": "acc"}, d, d) for d in datasets]
                key = {"protocol": "few_shot", "method": method, "backbone": backbone, "source": "",
                       "shots": shots, "metric": "acc"}
                out += row + [_derived(row, key, "average", "average", "average", _mean)]
    return out


def base2new_entries(stats: pd.DataFrame) -> list[dict]:
    s = stats[stats.protocol == "base2new"]
    out: list[dict] = []
    for (backbone, shots), b in s.groupby(["backbone", "shots"], sort=True):
        datasets = sorted(set(b.dataset))
        for method in sorted(set(b.method)):
            key = {"protocol": "base2new", "method": method, "backbone": backbone, "shots": shots}
            bases, news = [], []
            for d in datasets:
                base, new = (_cell_entry(b, {**key, "source": d, "metric": m}, d, f"{d} {m}") for m in ("base", "new"))
                h = _derived([base, new], {**key, "source": "", "metric": "H"}, d, f"{d} H", "H",
                             lambda v: harmonic(*v))
                bases.append(base)
                news.append(new)
                out += [base, new, h]
            avg = [_derived(parts, {**key, "source": "", "metric": m}, "average", f"average {m}", "average", _mean)
                   for parts, m in ((bases, "base"), (news, "new"))]
            h = _derived(avg, {**key, "source": "", "metric": "H"}, "average", "average H", "H", lambda v: harmonic(*v))
            out += [*avg, h]
    return out


def transfer_entries(stats: pd.DataFrame, protocol: str) -> list[dict]:
    """Cross-dataset / domain generalization: the source accuracy, each target and the target average."""
    s = stats[stats.protocol == protocol]
    out: list[dict] = []
    for (backbone, source, shots), b in s.groupby(["backbone", "source", "shots"], sort=True):
        targets = sorted(set(b.dataset) - {source})
        for method in sorted(set(b.method)):
            key = {"protocol": protocol, "method": method, "backbone": backbone, "source": source, "shots": shots,
                   "metric": "acc"}
            src = _cell_entry(b, key, source, f"{source} (source)")
            row = [_cell_entry(b, key, t, t) for t in targets]
            out += [src, *row, _derived(row, key, "average", TRANSFER_LABELS[protocol], "average", _mean)]
    return out


def entries(stats: pd.DataFrame) -> pd.DataFrame:
    """Every number the protocol tables show, one row each (columns :data:`ENTRY_COLUMNS`)."""
    rows = (few_shot_entries(stats) + base2new_entries(stats) + transfer_entries(stats, "cross_dataset")
            + transfer_entries(stats, "domain_generalization"))
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
    keys = ["method", "backbone", "source", "shots"] if protocol in TRANSFER_LABELS else ["method", "backbone",
                                                                                         "shots"]
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
    rows = [{"method": r["method"], "backbone": r["backbone"], "shots": int(r["shots"]), "dataset": r["column"],
             "metric": r["metric"], "reproduced": fmt_entry(r), "published": r["published_printed"],
             "delta": "" if math.isnan(r["delta"]) else f"{r['delta']:+.2f}", "source": r["published_paper"],
             "caveat": r["published_note"]} for r in m.to_dict("records")]
    return pd.DataFrame(rows)


def metrics_tree(stats: pd.DataFrame, table_entries: pd.DataFrame | None = None) -> dict:
    """``{protocol: {backbone: {method: {dataset: {setting: mean}}}}}`` of complete cells and derived entries.

    ``setting`` is ``<K>shot_acc`` for few-shot and the metric otherwise; derived entries add the ``average``
    dataset (every protocol) and ``H`` (base-to-new). Incomplete, n/a, missing and failed entries are left out.
    """
    tree: dict = {}

    def put(protocol, backbone, method, dataset, shots, metric, value):
        setting = f"{int(shots)}shot_{metric}" if protocol == "few_shot" else metric
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
