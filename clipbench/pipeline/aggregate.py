"""Stage ``aggregate``: fold every method's results into the protocol tables, a Parquet table and DVC metrics.

Outputs (all under ``reports/``, all recomputable from ``results.parquet`` and the suite's plan):

* ``results.parquet``: every result row of every method (one per evaluation cell and seed);
* ``cells.csv``: per-cell statistics over seeds (mean, population std, n, 95% interval, status);
* ``<protocol>.md`` (display table + published comparison) and ``<protocol>.csv`` (every entry, numeric);
* ``completeness.md`` / ``.csv``: which planned cells exist, are n/a, missing or failed;
* ``published.csv``: every entry that has a published counterpart, with the difference;
* ``compare.md``: every method against zero-shot CLIP, paired over seeds × datasets (``clipbench compare``);
* ``few_shot_curves.csv`` / ``base_new.csv``: the plotted series; ``plots/``: the PNGs;
* ``summary.md`` (all of the above) and ``metrics.json`` (DVC metrics).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from clipbench import compare, plots, reference, report
from clipbench.config import SuiteConfig
from clipbench.io import atomic_write, atomic_write_json, atomic_write_text
from clipbench.layout import Layout
from clipbench.methods import METHODS
from clipbench.protocols import PROTOCOLS, eval_cells
from clipbench.results import COLUMNS, KEY_COLUMNS, RESULT_FILE, read_results

log = logging.getLogger(__name__)
TITLES = {
    "few_shot": "Few-shot classification (top-1 %, mean ± std over seeds; average over the datasets)",
    "base2new": "Base-to-new generalization (top-1 %; H from seed-averaged base and new; average H = H(mean base, "
                "mean new))",
    "cross_dataset": "Cross-dataset transfer (top-1 %; source accuracy beside the average over the targets)",
    "domain_generalization": "Domain generalization (top-1 %; source accuracy beside the OOD average over the "
                             "targets)",
}
LEGEND = ("Cells: mean ± population std over seeds; `seeds (n)` is the number of seeds per cell, and a cell with "
          "fewer seeds than planned shows `(n=k/N, missing)`. The 95% interval (mean ± 1.96·std/√n) of every cell "
          "is in `<protocol>.csv` and `cells.csv`. `n/a`: the method has no answer for that cell (e.g. "
          "class-specific weights on unseen classes); `missing`: a planned result is absent; `failed`: a result "
          "row reports a failure; `incomplete (k/N)`: an average or H over a row with a missing or failed cell, "
          "never computed on fewer cells.\n")


def expected_rows(cfg: SuiteConfig) -> pd.DataFrame:
    """One row per planned (method, backbone, evaluation cell, seed): what the tables must contain."""
    cells = [c.as_row() for c in eval_cells(cfg)]
    rows = [{**c, "method": m, "backbone": b} for b in cfg.backbones for m in cfg.methods for c in cells]
    return pd.DataFrame(rows, columns=KEY_COLUMNS + ["metric"])


def collect(cfg: SuiteConfig, layout: Layout) -> pd.DataFrame:
    """Every method's result table; a method whose table is absent is reported (its cells become missing)."""
    paths = [layout.results(b, m) / RESULT_FILE for b in cfg.backbones for m in cfg.methods]
    absent = [p for p in paths if not p.is_file()]
    for path in absent:
        log.warning("result table %s is absent; its cells are reported as missing", path)
    present = [p for p in paths if p.is_file()]
    return read_results(present) if present else pd.DataFrame(columns=COLUMNS)


def _method_notes(cfg: SuiteConfig) -> str:
    lines = ["| method | inputs | class-specific | validation policy |", "|---|---|---|---|"]
    for name in cfg.methods:
        m = METHODS.get(name)
        lines.append(f"| {name} | {m.requires.value} | {'yes' if m.class_specific else 'no'} | {m.selection} |")
    return "\n".join(lines) + "\n"


def _protocol_section(protocol: str, matched: pd.DataFrame) -> str:
    body = f"## {TITLES[protocol]}\n\n{report.to_markdown(report.wide_table(matched, protocol))}"
    published = report.published_table(matched, protocol)
    if not published.empty:
        body += f"\n### Published vs reproduced ({protocol})\n\n{report.to_markdown(published)}"
    return body


def _completeness_section(completed: pd.DataFrame, stats: pd.DataFrame) -> str:
    counts = report.status_counts(completed)
    line = ", ".join(f"{n} {s}" for s, n in counts.items())
    return (f"## Completeness\n\nResult rows (one per cell and seed): {line}.\n\n"
            f"{report.to_markdown(report.completeness(stats))}")


def write_tables(results: pd.DataFrame, expected: pd.DataFrame | None, out: Path, *, suite: str,
                 template_set: str, method_notes: str = "") -> dict:
    """Write every table of ``reports/`` for ``results``; return the metrics tree (pure of the inputs)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.parquet", lambda tmp: results.to_parquet(tmp, index=False))
    completed = report.complete(results, expected)
    stats = report.cell_stats(completed)
    atomic_write(out / "cells.csv", lambda tmp: stats.to_csv(tmp, index=False))
    matched = reference.match(report.entries(stats), template_set)
    sections = [f"# clipbench results: suite `{suite}`\n",
                f"Text classifier: template set `{template_set}` (published numbers are shown only for the same "
                "template setting).\n", LEGEND]
    for protocol in PROTOCOLS:
        part = matched[matched.protocol == protocol]
        atomic_write(out / f"{protocol}.csv", lambda tmp, p=part: p.to_csv(tmp, index=False))
        body = _protocol_section(protocol, matched)
        atomic_write_text(out / f"{protocol}.md", body)
        sections.append(body)
    published = matched[matched.published.notna()]
    atomic_write(out / "published.csv", lambda tmp: published.to_csv(tmp, index=False))
    matrix = report.completeness(stats)
    atomic_write(out / "completeness.csv", lambda tmp: matrix.to_csv(tmp, index=False))
    completeness_md = _completeness_section(completed, stats)
    atomic_write_text(out / "completeness.md", completeness_md)
    sections.append(completeness_md)
    paired = ("## Paired comparison against zero-shot CLIP (per-seed differences over seeds × datasets)\n\n"
              + compare.against_baseline(results))
    atomic_write_text(out / "compare.md", paired)
    sections.append(paired)
    if method_notes:
        sections.append("## Methods and validation policy\n\n" + method_notes)
    plots.write_plots(matched, out / "plots")
    curves, scatter = plots.curve_series(matched), plots.base_new_series(matched)
    atomic_write(out / "few_shot_curves.csv", lambda tmp: curves.to_csv(tmp, index=False))
    atomic_write(out / "base_new.csv", lambda tmp: scatter.to_csv(tmp, index=False))
    atomic_write_text(out / "summary.md", "\n".join(sections))
    tree = report.metrics_tree(stats, matched)
    atomic_write_json(out / "metrics.json", tree)
    return tree


def run(*, cfg: SuiteConfig, layout: Layout) -> Path:
    out = layout.reports()
    write_tables(collect(cfg, layout), expected_rows(cfg), out, suite=cfg.suite,
                 template_set=cfg.text.template_set, method_notes=_method_notes(cfg))
    return out
