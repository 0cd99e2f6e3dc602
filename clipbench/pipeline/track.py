"""Stage ``track``: log the aggregated results to MLflow (see :mod:`clipbench.tracking`).

Parent runs get the numbers of the protocol tables written by ``aggregate`` (``reports/tables/<protocol>.csv``) and
the protocol's tables and plots as artifacts, so MLflow shows exactly what the reports show.

A store that cannot be reached or written gives one warning and ``reports/tracking.json`` with ``status:
unavailable``, the error and the retry command; the stage still succeeds. Because that file then matches
``dvc.lock``, a plain ``dvc repro`` does not try again once the server is up: ``dvc repro -s -f track`` does
(changing ``tracking`` in ``params.yaml`` also re-runs the stage).
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from clipbench import tracking
from clipbench.config import SuiteConfig
from clipbench.io import atomic_write_json
from clipbench.layout import TABLES_DIR, Layout
from clipbench.protocols import all_protocols
from clipbench.results import read_results
from clipbench.typed import to_plain

PACKAGES = ("clipbench", "torch", "open_clip_torch", "dvc", "mlflow", "numpy", "pandas", "scikit-learn")


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def lineage(cfg: SuiteConfig, root: Path) -> dict[str, str]:
    return {
        "git_commit": git_commit(root),
        "suite": cfg.suite,
        "template_set": cfg.text.template_set,
        "tracked_by": "track",
        **{f"version.{p}": _version(p) for p in PACKAGES},
    }


def report_entries(reports: Path) -> pd.DataFrame | None:
    """The table entries ``aggregate`` wrote (``None`` if it wrote no protocol table)."""
    paths = [path for p in all_protocols() if (path := reports / TABLES_DIR / f"{p.name}.csv").is_file()]
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths]
    return pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(len(f) for f in frames) else None


def report_artifacts(reports: Path) -> dict[str, list[Path]]:
    """Per protocol: its table (md, csv), the completeness matrix, the summary and its plots."""
    shared = [reports / "completeness.md", reports / "summary.md"]
    out = {}
    for p in all_protocols():
        plots = sorted((reports / "plots").glob(f"{p.plot_prefix}*.png")) if p.plot_prefix else []
        out[p.name] = [reports / TABLES_DIR / f"{p.name}.md", reports / TABLES_DIR / f"{p.name}.csv", *shared, *plots]
    return out


def method_configs(cfg: SuiteConfig) -> dict[tuple[str, str], dict]:
    """(protocol, method) -> the method's plain config under that protocol (protocol overrides applied)."""
    return {(p, m): to_plain(cfg.method_config(m, p)) for p in cfg.protocols for m in cfg.methods}


def run(*, cfg: SuiteConfig, layout: Layout) -> dict:
    summary: dict = {"status": "disabled"}
    if cfg.tracking.enabled:
        reports = layout.reports()
        results = read_results([reports / "results.parquet"])
        configs = method_configs(cfg)
        summary = tracking.log_results(
            results,
            uri=cfg.tracking.uri,
            experiment_prefix=cfg.tracking.experiment_prefix,
            configs=configs,
            lineage=lineage(cfg, layout.root),
            entries=report_entries(reports),
            artifacts=report_artifacts(reports),
            timeout_s=cfg.tracking.timeout_s,
            retries=cfg.tracking.retries,
        )
    atomic_write_json(layout.reports() / "tracking.json", summary)
    return summary
