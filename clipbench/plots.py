"""Report plots (matplotlib, Agg backend) and the CSV series behind them (for ``dvc plots show``).

Only complete (``ok``) entries are drawn; a missing point is a gap, never an interpolated value. PNGs carry
no software/date metadata, so identical tables give byte-identical files.

Each protocol decides which plots it has (``Protocol.draw``, ``Protocol.series``) and draws them with these:

* :func:`curve_pngs`: ``<prefix><backbone>_<dataset>.png`` / ``<prefix><backbone>_average.png``, accuracy
  against shots, one line per method, error bars = population std over seeds (none on the average) — few-shot;
* :func:`scatter_pngs`: ``<prefix><backbone>.png``, base against new accuracy, per dataset (small) and
  averaged (large), with the iso-H curve through each method's average — base-to-new;
* :func:`curve_series` and :func:`base_new_series`: the same numbers as tidy series (``reports/*.csv``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from clipbench.io import atomic_directory  # noqa: E402

_META = {"Software": None}


def curve_series(entries: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Accuracy per (backbone, method, dataset or ``average``, shots) of ``protocol``'s complete entries."""
    e = entries[(entries.protocol == protocol) & (entries.status == "ok")]
    return (
        e.rename(columns={"column": "dataset", "mean": "acc"})[
            ["backbone", "method", "dataset", "shots", "acc", "std", "n"]
        ]
        .sort_values(["backbone", "dataset", "method", "shots"])
        .reset_index(drop=True)
    )


def base_new_series(entries: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Base, new and H of ``protocol`` per (backbone, method, dataset or ``average``) where all three are complete."""
    e = entries[(entries.protocol == protocol) & (entries.status == "ok")]
    wide = e.pivot_table(index=["backbone", "method", "column"], columns="metric", values="mean").reset_index()
    wide.columns.name = None
    if wide.empty or not {"base", "new", "H"} <= set(wide.columns):
        return pd.DataFrame(columns=["backbone", "method", "dataset", "base", "new", "H"])
    wide = wide.dropna(subset=["base", "new", "H"]).rename(columns={"column": "dataset"})
    return (
        wide[["backbone", "method", "dataset", "base", "new", "H"]]
        .sort_values(["backbone", "dataset", "method"])
        .reset_index(drop=True)
    )


def _curve_png(series: pd.DataFrame, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    shots = sorted(set(series.shots))
    for method, g in series.groupby("method", sort=True):
        g = g.set_index("shots").reindex(shots)  # an absent point stays a gap (NaN breaks the line)
        std = None if (series.dataset == "average").all() else g["std"]
        ax.errorbar(shots, g.acc, yerr=std, marker="o", capsize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set(xlabel="shots per class", ylabel="top-1 accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata=_META)
    plt.close(fig)


def _scatter_png(series: pd.DataFrame, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (method, g) in enumerate(series.groupby("method", sort=True)):
        color = colors[i % len(colors)]
        per = g[g.dataset != "average"]
        ax.scatter(per.base, per.new, s=18, alpha=0.5, color=color)
        avg = g[g.dataset == "average"]
        ax.scatter(avg.base, avg.new, s=90, marker="D", color=color, edgecolor="black", label=method)
        for h in avg.H:
            b = np.linspace(h / 2 + 1e-3, 100, 200)
            n = h * b / (2 * b - h)
            keep = (n > 0) & (n <= 100)
            ax.plot(b[keep], n[keep], lw=0.6, ls="--", color=color)
    ax.set(xlabel="base accuracy (%)", ylabel="new accuracy (%)", title=title, xlim=(0, 100), ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="◆ average, • datasets")
    fig.tight_layout()
    fig.savefig(path, metadata=_META)
    plt.close(fig)


def curve_pngs(curves: pd.DataFrame, directory: Path, prefix: str) -> list[str]:
    """One accuracy-vs-shots PNG per (backbone, dataset or average) of :func:`curve_series`; return the names."""
    names = []
    for (backbone, dataset), g in curves.groupby(["backbone", "dataset"], sort=True):
        name = f"{prefix}{backbone}_{dataset}.png"
        label = "average over datasets" if dataset == "average" else dataset
        _curve_png(g, f"Few-shot: {label} ({backbone})", directory / name)
        names.append(name)
    return names


def scatter_pngs(scatter: pd.DataFrame, directory: Path, prefix: str) -> list[str]:
    """One base-vs-new PNG per backbone of :func:`base_new_series`; return the names."""
    names = []
    for backbone, g in scatter.groupby("backbone", sort=True):
        name = f"{prefix}{backbone}.png"
        _scatter_png(g, f"Base-to-new ({backbone})", directory / name)
        names.append(name)
    return names


def write_plots(entries: pd.DataFrame, out: Path) -> list[Path]:
    """Write every protocol's PNGs into the directory ``out`` (replaced as a whole); return their paths."""
    from clipbench.protocols import all_protocols

    names: list[str] = []
    with atomic_directory(Path(out)) as tmp:
        for protocol in all_protocols():
            names += protocol.draw(entries, tmp)
    return [Path(out) / n for n in names]
