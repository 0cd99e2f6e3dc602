"""`dvc repro` end to end on a reduced toy suite in a scratch copy of the project (slow: ~2-3 min)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from dvc_workspace import make_workspace, reduced_params
from dvc_workspace import ran_stages as _ran
from dvc_workspace import run as _run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("repo"), reduced_params())


def test_repro_then_noop_then_only_changed_method(workspace):
    first = _run([sys.executable, "-m", "dvc", "repro"], workspace)
    assert "aggregate" in _ran(first) and "track" in _ran(first)
    for table in ("few_shot", "base2new", "cross_dataset", "domain_generalization"):
        assert (workspace / "reports" / f"{table}.md").is_file()
    second = _run([sys.executable, "-m", "dvc", "repro"], workspace)
    assert _ran(second) == set()

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["method_params"]["clip_adapter"]["alpha"] = 0.5
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _ran(_run([sys.executable, "-m", "dvc", "repro"], workspace))
    sources = params["datasets"]
    assert {s for s in third if s.startswith(("train@", "evaluate@"))} == {
        *(f"train@toy_vit-clip_adapter-{d}" for d in sources), "evaluate@toy_vit-clip_adapter"}
    assert not any(s.startswith(("download", "split", "backbone", "extract")) for s in third)
