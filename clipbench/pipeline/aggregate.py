"""Stage ``aggregate``: fold every method's results into the protocol tables, a Parquet table and DVC metrics.

Outputs (all under ``reports/``, all recomputable from ``results.parquet`` and the suite's plan):

* ``results.parquet``: every result row of every method (one per evaluation cell and seed);
* ``cells.csv``: per-cell statistics over seeds (mean, population std, n, 95% interval, status);
* ``tables/<protocol>.md`` (display table + published comparison) and ``tables/<protocol>.csv`` (every entry,
  numeric), for every protocol the plan or the results have (the folder is replaced as a whole);
* ``completeness.md`` / ``.csv``: which planned cells exist, are n/a, missing or failed;
* ``published.csv``: every entry that has a published counterpart, with the difference;
* ``compare.md``: every method against zero-shot CLIP, paired over seeds × datasets (``clipbench compare``);
* the plotted series of each protocol that has plots (``few_shot_curves.csv``, ``base_new.csv``); ``plots/``: the
  PNGs;
* ``summary.md`` (all of the above) and ``metrics.json`` (DVC metrics);
* ``invariants.json``: exact per-cell numbers gated by ``clipbench check`` (training diagnostics, evaluation counts).
"""

from __future__ import annotations

import logging
from functools import cache, partial
from pathlib import Path

import pandas as pd

from clipbench import compare, plots, recipes, reference, report, selection
from clipbench.config import SuiteConfig
from clipbench.data.fullval import FILE as FULL_VAL_FILE
from clipbench.invariants import run_invariants
from clipbench.io import atomic_directory, atomic_write, atomic_write_json, atomic_write_text, write_bytes
from clipbench.layout import TABLES_DIR, Layout
from clipbench.methods import METHODS
from clipbench.protocols import all_protocols, eval_cells
from clipbench.protocols.base import Protocol
from clipbench.results import COLUMNS, KEY_COLUMNS, RESULT_FILE, read_results

log = logging.getLogger(__name__)
LEGEND = (
    "Cells: mean ± population std over seeds; `seeds (n)` is the number of seeds per cell, and a cell with "
    "fewer seeds than planned shows `(n=k/N, missing)`. The 95% interval (mean ± 1.96·std/√n) of every cell "
    "is in `<protocol>.csv` and `cells.csv`. `n/a`: the method has no answer for that cell (e.g. "
    "class-specific weights on unseen classes); `missing`: a planned result is absent; `failed`: a result "
    "row reports a failure; `incomplete (k/N)`: an average or H over a row with a missing or failed cell, "
    "never computed on fewer cells.\n"
)


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
        lines.append(f"| {name} | {m.requires.value} | {'yes' if m.class_specific else 'no'} | {_policy(cfg, name)} |")
    return "\n".join(lines) + "\n"


def _policy(cfg: SuiteConfig, method: str) -> str:
    """The method's declared validation policy, and the suite's split where it is not the default one."""
    policy = METHODS.get(method).selection
    if cfg.selection != selection.DEFAULT and any(selection.selects(cfg, method, d) for d in cfg.datasets):
        policy += f"; this suite selects on {selection.DESCRIPTIONS[cfg.selection]} (`selection: {cfg.selection}`)"
    return policy


def _protocol_section(protocol: Protocol, matched: pd.DataFrame) -> str:
    body = f"## {protocol.title}\n\n{report.to_markdown(report.wide_table(matched, protocol.name))}"
    published = report.published_table(matched, protocol.name)
    if not published.empty:
        body += f"\n### Published vs reproduced ({protocol.name})\n\n{report.to_markdown(published)}"
    return body


def _write_protocol_tables(matched: pd.DataFrame, directory: Path) -> list[str]:
    """``<protocol>.csv`` and ``<protocol>.md`` of every protocol with planned or reported cells (a protocol the
    suite does not enable has none); return the Markdown sections."""
    sections = []
    with atomic_directory(directory) as tmp:
        for protocol in all_protocols():
            part = matched[matched.protocol == protocol.name]
            if part.empty:
                continue
            part.to_csv(tmp / f"{protocol.name}.csv", index=False)
            sections.append(_protocol_section(protocol, matched))
            write_bytes(tmp / f"{protocol.name}.md", sections[-1].encode())
    return sections


def _completeness_section(completed: pd.DataFrame, stats: pd.DataFrame) -> str:
    counts = report.status_counts(completed)
    line = ", ".join(f"{n} {s}" for s, n in counts.items())
    return (
        f"## Completeness\n\nResult rows (one per cell and seed): {line}.\n\n"
        f"{report.to_markdown(report.completeness(stats))}"
    )


def write_tables(
    results: pd.DataFrame,
    expected: pd.DataFrame | None,
    out: Path,
    *,
    suite: str,
    template_set: str,
    method_notes: str = "",
    selection_line: str = "",
    recipe: reference.Recipe | None = None,
    recipe_line: str = "",
) -> dict:
    """Write every table of ``reports/`` for ``results``; return the metrics tree (pure of the inputs). ``recipe``
    gives the template set each method ran per dataset (default: ``template_set`` everywhere); ``recipe_line``
    names those that differ from it."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.parquet", lambda tmp: results.to_parquet(tmp, index=False))
    completed = report.complete(results, expected)
    stats = report.cell_stats(completed)
    atomic_write(out / "cells.csv", lambda tmp: stats.to_csv(tmp, index=False))
    matched = reference.match(report.entries(stats), recipe or template_set)
    sections = [
        f"# clipbench results: suite `{suite}`\n",
        f"Text classifier: template set `{template_set}` (published numbers are shown only for the same "
        "template setting).\n",
        *([recipe_line] if recipe_line else []),
        *([selection_line] if selection_line else []),
        LEGEND,
        *_write_protocol_tables(matched, out / TABLES_DIR),
    ]
    published = matched[matched.published.notna()]
    atomic_write(out / "published.csv", lambda tmp: published.to_csv(tmp, index=False))
    matrix = report.completeness(stats)
    atomic_write(out / "completeness.csv", lambda tmp: matrix.to_csv(tmp, index=False))
    completeness_md = _completeness_section(completed, stats)
    atomic_write_text(out / "completeness.md", completeness_md)
    sections.append(completeness_md)
    paired = (
        "## Paired comparison against zero-shot CLIP (per-seed differences over seeds × datasets)\n\n"
        + compare.against_baseline(results)
    )
    atomic_write_text(out / "compare.md", paired)
    sections.append(paired)
    if method_notes:
        sections.append("## Methods and validation policy\n\n" + method_notes)
    plots.write_plots(matched, out / "plots")
    for protocol in all_protocols():
        for name, series in protocol.series(matched).items():
            atomic_write(out / name, lambda tmp, s=series: s.to_csv(tmp, index=False))
    atomic_write_text(out / "summary.md", "\n".join(sections))
    tree = report.metrics_tree(stats, matched)
    atomic_write_json(out / "metrics.json", tree)
    atomic_write_json(out / "invariants.json", run_invariants(results))
    return tree


def run(*, cfg: SuiteConfig, layout: Layout) -> Path:
    out = layout.reports()
    write_tables(
        collect(cfg, layout),
        expected_rows(cfg),
        out,
        suite=cfg.suite,
        template_set=cfg.text.template_set,
        method_notes=_method_notes(cfg),
        selection_line=_selection_line(cfg, layout),
        recipe=cache(partial(recipes.method_set, cfg)),
        recipe_line=recipes.summary_line(cfg),
    )
    return out


def _selection_line(cfg: SuiteConfig, layout: Layout) -> str:
    """The selection split line; a source dataset selected on with ``full_val`` but given no full validation list
    by the split stage has no validation split of its own (the few-shot fallback)."""
    fallback = tuple(
        d for d in cfg.datasets if selection.needs_full_val(cfg, d) and not (layout.splits(d) / FULL_VAL_FILE).is_file()
    )
    return selection.summary_line(cfg, fallback)
