"""The DAG expands as designed: bounded stage count at paper scale, narrow per-method params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from clipbench.config import load_suite
from clipbench.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
PAPER = load_suite(ROOT / "configs" / "paper.yaml")
PAPER_DATASETS, PAPER_TARGETS = list(PAPER.datasets), list(PAPER.targets)
PAPER_METHODS = METHODS.names()  # every registered method


def stage_list(tmp: Path, params: dict) -> list[str]:
    shutil.copy(ROOT / "dvc.yaml", tmp / "dvc.yaml")
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(DVC + ["init", "--no-scm", "-q"], cwd=tmp, check=True, env=env)
    out = subprocess.run(
        DVC + ["stage", "list", "--name-only"], cwd=tmp, check=True, env=env, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_paper_scale_expands_to_at_most_400_stages(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(
        backbones=["vitb16_openai"],
        datasets=PAPER_DATASETS,
        targets=PAPER_TARGETS,
        methods=PAPER_METHODS,
        method_params={m: {} for m in PAPER_METHODS},
    )
    stages = stage_list(tmp_path, params)
    assert len(stages) <= 400, len(stages)
    assert sum(s.startswith("train@") for s in stages) == len(PAPER_METHODS) * len(PAPER_DATASETS)
    assert "train@vitb16_openai-clipfit-imagenet" in stages


def test_project_dag_lists_every_stage_kind(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    kinds = {s.split("@")[0] for s in stage_list(tmp_path, params)}
    assert kinds == {
        "code",
        "download",
        "download_target",
        "split",
        "backbone",
        "extract",
        "extract_target",
        "train",
        "evaluate",
        "aggregate",
        "track",
    }


def test_paper_suite_config_validates_and_its_dag_builds_on_fixture_data(tmp_path):
    from clipbench.config import load_suite

    from coop_fixtures import write_coop_root

    params = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    params["data_root"] = str(write_coop_root(tmp_path / "coop"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_suite(tmp_path / "params.yaml")
    assert cfg.datasets == tuple(PAPER_DATASETS) and cfg.targets == tuple(PAPER_TARGETS)
    assert cfg.backbones == ("vitb16_openai",)
    stages = stage_list(tmp_path, params)
    n_methods, n_sources = len(params["methods"]), len(PAPER_DATASETS)
    assert sum(s.startswith("download@") for s in stages) == n_sources
    assert sum(s.startswith("download_target@") for s in stages) == len(PAPER_TARGETS)
    assert sum(s.startswith("train@") for s in stages) == n_methods * n_sources
    assert "extract_target@vitb16_openai-imagenet_a" in stages


def test_paper_suite_runs_every_registered_method():
    """DVC expands `methods` from the params file itself, so configs/paper.yaml lists every registered method."""
    missing = sorted(set(METHODS.names()) - set(PAPER.methods))
    assert not missing, (
        f"configs/paper.yaml: add {missing} to `methods` (every registered method runs in the paper suite)"
    )
