"""Scratch copies of the project for tests that run DVC: tracked files plus a reduced ``params.yaml``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from clipbench import suites

ROOT = Path(__file__).resolve().parents[1]


def dvc_env() -> dict[str, str]:
    """The environment a DVC subprocess runs in (this interpreter's scripts first on PATH, no analytics)."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def run(args: list[str], cwd: Path) -> str:
    """Run ``args`` in ``cwd``; fail the test with the output tail if it exits non-zero."""
    proc = subprocess.run(args, cwd=cwd, env=dvc_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> set[str]:
    """Names of the stages a ``dvc repro`` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def reduced_params(
    sources: int = 2,
    targets: int = 1,
    shots: tuple[int, ...] = (1, 4),
    seeds: tuple[int, ...] = (1, 2),
    methods: dict[str, dict] | None = None,
) -> dict:
    """``params.yaml`` cut down by :func:`clipbench.suites.reduced_params` to the first ``sources`` datasets and
    ``targets`` targets, with local sqlite tracking (the DVC mechanics, not every dataset or method)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    methods = methods or {"zeroshot": {}, "linear_probe": {}, "clip_adapter": {"epochs": 3}}
    params = suites.reduced_params(params, suites.Reduction(sources, targets, shots, seeds), methods)
    params["tracking"]["uri"] = "sqlite:///mlflow.db"
    return params


def make_workspace(dest: Path, params: dict) -> Path:
    """Copy the tracked and unignored files (no reports, no dvc.lock) to ``dest``, write ``params``, git-init."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if name.startswith(("reports/", "dvc.lock")) or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    return dest


def killed_when(args: list[str], cwd: Path, ready: Callable[[], bool], log: Path, timeout: float = 900) -> None:
    """Start ``args`` in its own process group and SIGKILL the whole group as soon as ``ready()``."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, env=dvc_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"{' '.join(args)} ended too early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "timed out waiting for the point to interrupt"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
