"""`dvc repro` end to end on a reduced toy suite in a scratch copy of the project (slow: ~2-3 min)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(("reports/", "dvc.lock")) or not (ROOT / name).is_file():
            continue
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, work / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    sources, target = params["datasets"][:2], params["targets"][:1]  # the DVC mechanics, not every dataset
    params.update(datasets=sources, targets=target)
    params["protocols"]["few_shot"].update(datasets=sources, shots=[1, 4], seeds=[1, 2])
    params["protocols"]["base2new"].update(datasets=sources, shots=4, seeds=[1])
    params["protocols"]["cross_dataset"].update(source=sources[0], targets=sources[1:], shots=4, seeds=[1])
    params["protocols"]["domain_generalization"].update(source=sources[0], targets=target, shots=4, seeds=[1])
    params["toy_pretrain"].update(images=128, steps=3, batch_size=32)
    params["features"]["views"] = 2
    params["methods"] = ["zeroshot", "linear_probe", "clip_adapter"]  # the DVC mechanics, not every method
    params["method_params"] = {"zeroshot": {}, "linear_probe": {}, "clip_adapter": {"epochs": 3}}
    params["tracking"]["uri"] = "sqlite:///mlflow.db"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], work)
    return work


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
