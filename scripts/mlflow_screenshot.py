"""Screenshot the MLflow UI (runs page and parent-run compare view) in headless Chromium.

    python scripts/mlflow_screenshot.py                      # the project's store after `dvc repro`
    python scripts/mlflow_screenshot.py --demo --out docs    # a synthetic toy run through aggregate + track

``--demo`` fills a temporary store with synthetic accuracies for every planned cell of ``params.yaml`` (n/a
where a class-specific method has no answer), runs the real aggregate and track code on them, and leaves
the project's own store untouched.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from clipbench import tracking
from clipbench.config import load_suite
from clipbench.methods import METHODS
from clipbench.pipeline import aggregate
from clipbench.pipeline.track import lineage, method_configs, report_artifacts, report_entries
from clipbench.screenshot import screenshot_experiment


def synthetic_results(cfg, seed: int = 0):
    """Result rows for every planned cell with made-up accuracies (for demonstrations only)."""
    rng = np.random.default_rng(seed)
    rows = aggregate.expected_rows(cfg)
    skill = {m: i * 3.0 for i, m in enumerate(cfg.methods)}
    na = [
        METHODS.get(m).class_specific and (s == "new" or (p == "cross_dataset" and d != src))
        for m, s, p, d, src in zip(rows.method, rows.subset, rows.protocol, rows.dataset, rows.source, strict=True)
    ]
    value = [45 + skill[m] + 4 * np.log2(k) + rng.normal(0, 1.5) for m, k in zip(rows.method, rows.shots, strict=True)]
    return rows.assign(
        value=np.where(na, np.nan, value),
        status=np.where(na, "n/a", "ok"),
        n=100,
        note="",
        config_hash=[cfg.method_config_hash(m) for m in rows.method],
        split_hash="demo",
        feature_key="demo",
        train_key="demo",
        eval_key=[f"demo-{i}" for i in range(len(rows))],
        train_seconds=0.0,
        eval_seconds=0.0,
        diagnostics="{}",
    )


def demo_store(cfg, root: Path) -> str:
    results = synthetic_results(cfg)
    reports = root / "reports"
    aggregate.write_tables(
        results, aggregate.expected_rows(cfg), reports, suite=cfg.suite, template_set=cfg.text.template_set
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    configs = method_configs(cfg)
    summary = tracking.log_results(
        results,
        uri=uri,
        experiment_prefix=cfg.tracking.experiment_prefix,
        configs=configs,
        lineage=lineage(cfg, Path(".")),
        entries=report_entries(reports),
        artifacts=report_artifacts(reports),
    )
    print(f"demo store: {summary}")
    return uri


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--uri", help="tracking store (default: params.yaml tracking.uri)")
    p.add_argument("--protocol", default="base2new")
    p.add_argument("--out", default="docs", type=Path)
    p.add_argument("--demo", action="store_true", help="log a synthetic toy run to a temporary store first")
    args = p.parse_args()
    cfg = load_suite(args.params)
    with tempfile.TemporaryDirectory() as tmp:
        uri = demo_store(cfg, Path(tmp)) if args.demo else (args.uri or cfg.tracking.uri)
        for path in screenshot_experiment(uri, f"{cfg.tracking.experiment_prefix}/{args.protocol}", args.out):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
