"""Two independent runs of the miniature suite (pretraining included) give identical results."""

from __future__ import annotations

import pandas as pd

from clipbench.pipeline import backbone

from conftest import make_project
from test_pipeline import run_all


def _one_run(root) -> pd.DataFrame:
    cfg, layout, data_root = make_project(root)
    backbone.run(backbone="toy_vit", pretrain_config=cfg.toy_pretrain, layout=layout)
    run_all(cfg, layout, data_root)
    return pd.read_parquet(layout.reports() / "results.parquet")


def _manifests(root) -> dict[str, bytes]:
    files = sorted((root / "data" / "splits").rglob("*.json"))
    assert files
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_two_runs_identical(tmp_path, small_toy):
    a, b = _one_run(tmp_path / "a"), _one_run(tmp_path / "b")
    keys = ["method", "protocol", "source", "shots", "seed", "dataset", "subset"]
    merged = a.merge(b, on=keys, suffixes=("_a", "_b"))
    assert len(merged) == len(a) == len(b)
    assert merged.value_a.fillna(-1).tolist() == merged.value_b.fillna(-1).tolist()
    assert (merged.split_hash_a == merged.split_hash_b).all()
    assert _manifests(tmp_path / "a") == _manifests(tmp_path / "b")  # byte-identical split manifests
    assert (merged.train_key_a == merged.train_key_b).all()
