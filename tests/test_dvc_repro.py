"""`dvc repro` end to end on a reduced toy suite in a scratch copy of the project (slow: a few minutes).

The tests share one workspace and run in order: a full repro, a no-op, a changed method parameter, a planted
edit in a module that another method imports (its computed code closure), then ``kill -9`` in the middle of two
stages with the reproduced project as the uninterrupted reference.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_workspace import killed_when, make_workspace, reduced_params
from dvc_workspace import ran_stages as _ran
from dvc_workspace import run as _run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    methods = {
        "zeroshot": {},
        "linear_probe": {},
        "clip_adapter": {"epochs": 3},
        "tip_adapter": {"augment_views": 2},
        "tip_adapter_f": {"epochs": 2, "augment_views": 2},
    }
    return make_workspace(tmp_path_factory.mktemp("repo"), reduced_params(sources=1, methods=methods))


def test_repro_then_noop_then_only_changed_method(workspace):
    first = _run([sys.executable, "-m", "dvc", "repro"], workspace)
    assert "aggregate" in _ran(first) and "track" in _ran(first)
    for table in ("few_shot", "base2new", "cross_dataset", "domain_generalization"):
        assert (workspace / "reports" / "tables" / f"{table}.md").is_file()
    second = _run([sys.executable, "-m", "dvc", "repro"], workspace)
    assert _ran(second) == set()

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["method_params"]["clip_adapter"]["alpha"] = 0.5
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _ran(_run([sys.executable, "-m", "dvc", "repro"], workspace))
    sources = params["datasets"]
    assert {s for s in third if s.startswith(("train@", "evaluate@"))} == {
        *(f"train@toy_vit-clip_adapter-{d}" for d in sources),
        "evaluate@toy_vit-clip_adapter",
    }
    assert not any(s.startswith(("download", "split", "backbone", "extract")) for s in third)


def _keys(cells: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["key"] for p in sorted(cells.glob("*/cell.json"))}


def test_edit_in_an_imported_module_reruns_exactly_its_importers(workspace):
    """Tip-Adapter-F imports Tip-Adapter's search: an edit there re-runs both methods' cells and nothing else."""
    sources = yaml.safe_load((workspace / "params.yaml").read_text())["datasets"]
    tip_f = workspace / "models" / "toy_vit" / "tip_adapter_f" / sources[0]
    before = _keys(tip_f)
    with (workspace / "clipbench" / "methods" / "tip_adapter.py").open("a") as module:
        module.write("\n_PLANTED_EDIT = 1  # a harmless change of the module's code\n")
    _run([sys.executable, "-m", "dvc", "repro", "--single-item", "code"], workspace)
    status = json.loads(_run([sys.executable, "-m", "dvc", "status", "--json"], workspace).strip().splitlines()[-1])
    expected = {
        *(f"train@toy_vit-{m}-{d}" for m in ("tip_adapter", "tip_adapter_f") for d in sources),
        "evaluate@toy_vit-tip_adapter",
        "evaluate@toy_vit-tip_adapter_f",
    }
    assert set(status) == expected
    ran = _ran(_run([sys.executable, "-m", "dvc", "repro"], workspace))
    assert {s for s in ran if s.startswith(("train@", "evaluate@"))} == expected
    after = _keys(tip_f)
    assert after.keys() == before.keys() and all(after[c] != before[c] for c in before)  # every cell retrained


OUTPUTS = ("data", "features", "models", "results", "reports")


def _results(work: Path) -> pd.DataFrame:
    return pd.read_parquet(work / "reports" / "results.parquet").drop(columns=["train_seconds", "eval_seconds"])


def test_kill_9_mid_stage_then_repro_matches_the_uninterrupted_run(workspace, tmp_path):
    """SIGKILL the whole ``dvc repro`` process group while a stage writes, twice; ``dvc repro`` recovers."""
    reference = _results(workspace)
    tables = {p.name: p.read_bytes() for p in (workspace / "reports").rglob("*.csv")}
    source = yaml.safe_load((workspace / "params.yaml").read_text())["datasets"][0]
    # Without its cache DVC cannot restore a missing output ("is cached - skipping run, checking out outputs"),
    # so the interrupted stages must really run again: the situation of a first run killed half-way.
    shutil.rmtree(workspace / ".dvc" / "cache")
    repro = [sys.executable, "-m", "dvc", "repro"]

    feats = workspace / "features" / "toy_vit" / source  # 1: extract has written its text features, not fit/
    extract = [*repro, "--force", "--single-item", f"extract@toy_vit-{source}"]
    killed_when(
        extract,
        workspace,
        lambda: (feats / "text.safetensors").is_file() and not (feats / "fit").exists(),
        tmp_path / "kill1.log",
    )
    assert not (feats / "fit").exists()
    assert _ran(_run(repro, workspace)) >= {f"extract@toy_vit-{source}"}

    cells = workspace / "models" / "toy_vit" / "linear_probe" / source  # 2: between two cells of a train stage
    planned = len(list(cells.iterdir()))
    shutil.rmtree(cells)  # the output, the shared cell store and DVC's cache (the stage is unchanged, so DVC
    shutil.rmtree(workspace / ".cells" / "train")  # would check the output out of its cache): every cell trains
    shutil.rmtree(workspace / ".dvc" / "cache")
    killed_when(repro, workspace, lambda: cells.is_dir() and any(cells.glob("*/cell.json")), tmp_path / "kill2.log")
    assert 0 < len(list(cells.glob("*/cell.json"))) < planned
    resumed = _ran(_run(repro, workspace))
    assert f"train@toy_vit-linear_probe-{source}" in resumed  # evaluation then finds the same trained states

    pd.testing.assert_frame_equal(_results(workspace), reference)
    assert {p.name: p.read_bytes() for p in (workspace / "reports").rglob("*.csv")} == tables
    assert not [p for d in OUTPUTS for p in (workspace / d).rglob("*.tmp")]
    assert _ran(_run([sys.executable, "-m", "dvc", "repro"], workspace)) == set()
