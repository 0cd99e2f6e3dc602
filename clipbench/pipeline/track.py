"""Stage ``track``: log the aggregated results to MLflow (see :mod:`clipbench.tracking`)."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from clipbench import tracking
from clipbench.config import SuiteConfig
from clipbench.io import atomic_write_json
from clipbench.layout import Layout
from clipbench.results import read_results
from clipbench.typed import to_plain


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def lineage(cfg: SuiteConfig, root: Path) -> dict[str, str]:
    return {"git_commit": git_commit(root), "suite": cfg.suite, "dvc_stage": "track",
            **{f"version.{p}": _version(p) for p in ("clipbench", "torch", "open_clip_torch", "dvc")}}


def run(*, cfg: SuiteConfig, layout: Layout) -> dict:
    summary: dict = {"status": "disabled"}
    if cfg.tracking.enabled:
        results = read_results([layout.reports() / "results.parquet"])
        configs = {m: to_plain(cfg.method_config(m)) for m in cfg.methods}
        summary = tracking.log_results(results, uri=cfg.tracking.uri, experiment_prefix=cfg.tracking.experiment_prefix,
                                       configs=configs, lineage=lineage(cfg, layout.root))
    atomic_write_json(layout.reports() / "tracking.json", summary)
    return summary
