"""Stage ``aggregate``: fold every method's results into the protocol tables, a Parquet table and DVC metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clipbench import report
from clipbench.config import SuiteConfig
from clipbench.io import atomic_write, atomic_write_json, atomic_write_text
from clipbench.layout import Layout
from clipbench.methods import METHODS
from clipbench.results import RESULT_FILE, read_results

TITLES = {
    "few_shot": "Few-shot classification (top-1 %, mean ± std over seeds)",
    "base2new": "Base-to-new generalization (top-1 %; H from seed-averaged base and new)",
    "cross_dataset": "Cross-dataset transfer (top-1 %; average over targets)",
    "domain_generalization": "Domain generalization (top-1 %; OOD average over targets)",
}


def _tables(stats: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {"few_shot": report.few_shot_table(stats), "base2new": report.base2new_table(stats),
            "cross_dataset": report.transfer_table(stats, "cross_dataset"),
            "domain_generalization": report.transfer_table(stats, "domain_generalization")}


def _method_notes(cfg: SuiteConfig) -> str:
    lines = ["| method | inputs | class-specific | validation policy |", "|---|---|---|---|"]
    for name in cfg.methods:
        m = METHODS.get(name)
        lines.append(f"| {name} | {m.requires.value} | {'yes' if m.class_specific else 'no'} | {m.selection} |")
    return "\n".join(lines) + "\n"


def run(*, cfg: SuiteConfig, layout: Layout) -> Path:
    paths = [layout.results(b, m) / RESULT_FILE for b in cfg.backbones for m in cfg.methods]
    results = read_results(paths)
    out = layout.reports()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.parquet", lambda tmp: results.to_parquet(tmp, index=False))
    stats = report.cell_stats(results)
    atomic_write(out / "cells.csv", lambda tmp: stats.to_csv(tmp, index=False))
    sections = [f"# clipbench results: suite `{cfg.suite}`\n", "n/a: the method has no answer for that cell "
                "(e.g. class-specific weights on unseen classes); incomplete: a cell of the row is missing.\n"]
    for protocol, table in _tables(stats).items():
        atomic_write(out / f"{protocol}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
        body = f"## {TITLES[protocol]}\n\n{report.to_markdown(table)}"
        atomic_write_text(out / f"{protocol}.md", body)
        sections.append(body)
    sections.append("## Methods and validation policy\n\n" + _method_notes(cfg))
    atomic_write_text(out / "summary.md", "\n".join(sections))
    atomic_write_json(out / "metrics.json", report.metrics_tree(stats))
    return out
