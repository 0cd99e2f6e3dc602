"""Protocol tables computed from the result table (pure functions of a DataFrame; no I/O).

Aggregation follows spec §5.5: per cell the mean and population std over seeds (with n); averages over
datasets are plain means of per-dataset means; base-to-new H per dataset is computed from the seed-averaged
base and new accuracies, and the average row's H from the averaged base and new (not the mean of H).
An average over a row with a missing or n/a cell is not computed: it prints "n/a" or "incomplete".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

GROUP = ["protocol", "method", "backbone", "source", "shots", "dataset", "metric"]


def cell_stats(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, population std, n and 95% interval half-width over seeds, per cell; ``ok`` only if every seed is."""
    def agg(g: pd.DataFrame) -> pd.Series:
        ok = g[g.status == "ok"].value
        complete = len(ok) == len(g) and len(ok) > 0
        std = float(np.std(ok)) if len(ok) else math.nan
        return pd.Series({"mean": float(ok.mean()) if complete else math.nan, "std": std, "n": len(ok),
                          "ci95": 1.96 * std / math.sqrt(len(ok)) if len(ok) else math.nan,
                          "status": "ok" if complete else ("n/a" if (g.status == "n/a").any() else "missing")})

    return results.groupby(GROUP, dropna=False).apply(agg, include_groups=False).reset_index()


def harmonic(base: float, new: float) -> float:
    if any(map(math.isnan, (base, new))) or base + new == 0:
        return math.nan
    return 2 * base * new / (base + new)


def _fmt(mean: float, std: float | None = None, n: int | None = None) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    text = f"{mean:.2f}"
    if std is not None and not math.isnan(std):
        text += f" ± {std:.2f}"
    return text


def few_shot_table(stats: pd.DataFrame) -> pd.DataFrame:
    s = stats[stats.protocol == "few_shot"]
    rows = []
    for (method, backbone, shots), g in s.groupby(["method", "backbone", "shots"], sort=True):
        row = {"method": method, "backbone": backbone, "shots": int(shots)}
        for _, c in g.sort_values("dataset").iterrows():
            row[c.dataset] = _fmt(c["mean"], c["std"])
        row["average"] = _fmt(g["mean"].mean()) if (g.status == "ok").all() else "incomplete"
        rows.append(row)
    return pd.DataFrame(rows)


def base2new_table(stats: pd.DataFrame) -> pd.DataFrame:
    s = stats[stats.protocol == "base2new"]
    rows = []
    for (method, backbone), g in s.groupby(["method", "backbone"], sort=True):
        row, bases, news = {"method": method, "backbone": backbone}, [], []
        for dataset, d in g.groupby("dataset", sort=True):
            b = d[d.metric == "base"]["mean"].iloc[0] if (d.metric == "base").any() else math.nan
            n = d[d.metric == "new"]["mean"].iloc[0] if (d.metric == "new").any() else math.nan
            bases.append(b)
            news.append(n)
            row[f"{dataset} base"], row[f"{dataset} new"], row[f"{dataset} H"] = _fmt(b), _fmt(n), _fmt(harmonic(b, n))
        mb = float(np.mean(bases)) if not any(map(math.isnan, bases)) else math.nan
        mn = float(np.mean(news)) if not any(map(math.isnan, news)) else math.nan
        row["average base"], row["average new"], row["average H"] = _fmt(mb), _fmt(mn), _fmt(harmonic(mb, mn))
        rows.append(row)
    return pd.DataFrame(rows)


def transfer_table(stats: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Cross-dataset / domain generalization: source accuracy, each target, and the target average."""
    s = stats[stats.protocol == protocol]
    rows = []
    for (method, backbone, source), g in s.groupby(["method", "backbone", "source"], sort=True):
        row = {"method": method, "backbone": backbone}
        src = g[g.dataset == source]
        row[f"{source} (source)"] = _fmt(src["mean"].iloc[0], src["std"].iloc[0]) if len(src) else "missing"
        targets = g[g.dataset != source].sort_values("dataset")
        for _, c in targets.iterrows():
            row[c.dataset] = _fmt(c["mean"], c["std"])
        ok = (targets.status == "ok").all()
        row["target average"] = _fmt(targets["mean"].mean()) if ok else ("n/a" if (targets.status == "n/a").all()
                                                                         else "incomplete")
        rows.append(row)
    return pd.DataFrame(rows)


def metrics_tree(stats: pd.DataFrame) -> dict:
    """Nested ``{protocol: {backbone: {method: {dataset: {setting: mean}}}}}`` of ok cells (DVC metrics)."""
    tree: dict = {}
    for _, c in stats[stats.status == "ok"].iterrows():
        setting = f"{int(c.shots)}shot_{c.metric}" if c.protocol == "few_shot" else c.metric
        node = tree.setdefault(c.protocol, {}).setdefault(c.backbone, {}).setdefault(c.method, {})
        node.setdefault(c.dataset, {})[setting] = round(float(c["mean"]), 4)
    return tree


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no optional dependency)."""
    if frame.empty:
        return "_no rows_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
