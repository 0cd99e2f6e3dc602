"""Paired comparison of two methods on the cells they share (same split, seed, test set and metric).

A *pair* is one (protocol, backbone, source, shots, seed, dataset, subset, metric) where both methods have an
``ok`` result; cells where either is n/a, missing or failed are counted, never paired. Per group (protocol,
backbone, shots, metric) the pairs span seeds × datasets; the summary gives the mean difference A − B, a
95% t-interval, a paired t-test and a Wilcoxon signed-rank test, and wins/ties/losses. Caveat: seeds of one
dataset share its test set, so the pairs are not fully independent and the p-values are optimistic; read
them together with the per-seed differences.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

PAIR_KEYS = ["protocol", "backbone", "source", "shots", "seed", "dataset", "subset", "metric"]
GROUP_KEYS = ["protocol", "backbone", "shots", "metric"]


def pairs(results: pd.DataFrame, a: str, b: str, protocol: str | None = None) -> pd.DataFrame:
    """Per-seed differences ``value_a − value_b`` on the shared ok cells (columns PAIR_KEYS + a, b, diff)."""
    ok = results[results.status == "ok"]
    if protocol:
        ok = ok[ok.protocol == protocol]
    left = ok[ok.method == a][PAIR_KEYS + ["value"]].rename(columns={"value": "a"})
    right = ok[ok.method == b][PAIR_KEYS + ["value"]].rename(columns={"value": "b"})
    merged = left.merge(right, on=PAIR_KEYS, how="inner", validate="one_to_one")
    return merged.assign(diff=merged.a - merged.b).sort_values(PAIR_KEYS).reset_index(drop=True)


def unpaired(results: pd.DataFrame, a: str, b: str, protocol: str | None = None) -> int:
    """How many cells of ``a`` or ``b`` have no partner result (n/a, missing or failed on either side)."""
    r = results[results.method.isin([a, b])]
    if protocol:
        r = r[r.protocol == protocol]
    keys = r[PAIR_KEYS].drop_duplicates()
    return len(keys) - len(pairs(results, a, b, protocol))


def summarize(diffs: np.ndarray) -> dict:
    """n, mean difference, 95% t-interval, paired t-test and Wilcoxon p-values, wins/ties/losses."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    out = {
        "pairs": n,
        "mean_diff": float(np.mean(d)) if n else math.nan,
        "ci95_low": math.nan,
        "ci95_high": math.nan,
        "t_p": math.nan,
        "wilcoxon_p": math.nan,
        "wins": int((d > 0).sum()),
        "ties": int((d == 0).sum()),
        "losses": int((d < 0).sum()),
    }
    if n >= 2:
        sd = float(np.std(d, ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out.update(ci95_low=out["mean_diff"] - half, ci95_high=out["mean_diff"] + half)
        if sd > 0:
            out["t_p"] = float(stats.ttest_1samp(d, 0.0).pvalue)  # = paired t-test of A and B
        if (d != 0).any():
            out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
    return out


def summary_table(p: pd.DataFrame) -> pd.DataFrame:
    """One row per (protocol, backbone, shots, metric) group of pairs, plus an ``all`` row per protocol."""
    rows = []
    for keys, g in p.groupby(GROUP_KEYS, sort=True):
        rows.append(
            {
                **dict(zip(GROUP_KEYS, keys, strict=True)),
                "datasets": g.dataset.nunique(),
                "seeds": g.seed.nunique(),
                **summarize(g["diff"].to_numpy()),
            }
        )
    for (protocol, backbone), g in p.groupby(["protocol", "backbone"], sort=True):
        if g.groupby(["shots", "metric"]).ngroups > 1:
            rows.append(
                {
                    "protocol": protocol,
                    "backbone": backbone,
                    "shots": "all",
                    "metric": "all",
                    "datasets": g.dataset.nunique(),
                    "seeds": g.seed.nunique(),
                    **summarize(g["diff"].to_numpy()),
                }
            )
    return pd.DataFrame(rows)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else (f"{v:.2g}" if abs(v) < 0.01 and v != 0 else f"{v:.2f}")
    return str(v)


def render(results: pd.DataFrame, a: str, b: str, protocol: str | None = None, per_seed: bool = True) -> str:
    """Markdown: the summary tests and, optionally, every per-seed difference."""
    from clipbench.report import to_markdown

    p = pairs(results, a, b, protocol)
    head = f"### {a} vs {b}" + (f" ({protocol})" if protocol else "") + "\n\n"
    if p.empty:
        return head + "_no shared ok cells_\n"
    table = summary_table(p)
    shown = table.assign(**{c: table[c].map(_fmt) for c in ("mean_diff", "ci95_low", "ci95_high", "t_p", "wilcoxon_p")})
    text = (
        head + f"Differences are {a} − {b} in accuracy points over {len(p)} shared cells "
        f"({unpaired(results, a, b, protocol)} cells without a partner are left out).\n\n" + to_markdown(shown)
    )
    if per_seed:
        detail = p[["protocol", "backbone", "shots", "dataset", "metric", "seed", "a", "b", "diff"]]
        detail = detail.assign(
            a=detail.a.map("{:.2f}".format), b=detail.b.map("{:.2f}".format), diff=detail["diff"].map("{:+.2f}".format)
        ).rename(columns={"a": a, "b": b})
        text += "\nPer-seed differences:\n\n" + to_markdown(detail)
    return text


def against_baseline(results: pd.DataFrame, baseline: str = "zeroshot") -> str:
    """The report section: every other method against ``baseline`` (summaries only)."""
    methods = sorted(set(results.method) - {baseline})
    if baseline not in set(results.method) or not methods:
        return f"_no comparison: `{baseline}` and at least one other method are needed_\n"
    return "\n".join(render(results, m, baseline, per_seed=False) for m in methods)
