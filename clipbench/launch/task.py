"""One launched task: its stages run by ``dvc repro`` in a throwaway clone of the project's commit.

The clone shares the DVC cache (``cache.dir`` in its local config) and the cell store with the main workspace,
gets the main workspace's ``params.yaml`` and the lock entries known so far (so ``dvc checkout`` restores its
upstream outputs from the cache), runs ``dvc repro --single-item`` on its stages (which saves their outputs and
run-cache entries into the shared cache), hands back their lock entries and is removed. No two tasks share a
workspace or a DVC lock, and none writes the main ``dvc.lock``. The task's completion marker (a JSON file written
atomically after the stages succeeded) is what the launcher trusts, never the scheduler's state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from clipbench.cells import STORE_ENV
from clipbench.io import atomic_write_text

# A ``python`` first on PATH that times every stage command (``python -m stages.*``): start, end, exit status and
# the command, one line each (each task's stage log; the DVC-overhead benchmark, clipbench/bench/dvc_overhead.py).
STAGE_WRAPPER = """#!/bin/sh
start=$(date +%s.%N)
"{python}" "$@"
rc=$?
echo "$start $(date +%s.%N) $rc $*" >> "{log}"
exit $rc
"""


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task needs, as plain values (it is pickled to the job)."""

    root: str  # the main workspace (its git repository is cloned)
    commit: str
    stages: tuple[str, ...]  # run in this order
    upstream: tuple[str, ...]  # stages outside the task whose outputs it reads (restored from the cache)
    lock: str  # dvc.lock text: the main workspace's plus the entries of earlier waves
    params: str  # params.yaml text
    cache_dir: str
    cell_store: str
    scratch: str  # throwaway workspaces are created below this directory
    marker: str  # the completion marker (JSON)
    log: str


def run_task(spec: TaskSpec) -> dict:
    """Run the task's stages; write and return the marker: their lock entries and where the time went."""
    Path(spec.log).parent.mkdir(parents=True, exist_ok=True)
    Path(spec.marker).unlink(missing_ok=True)
    times = {"start": time.time()}
    work = Path(tempfile.mkdtemp(prefix="clipbench-task-", dir=_scratch(spec)))
    try:
        with open(spec.log, "a") as log:
            env = _prepare(spec, work, log)
            times["workspace"] = time.time()
            if spec.upstream:
                _dvc(["checkout", *spec.upstream], work, env, log)
            times["checkout"] = time.time()
            _dvc(["repro", "--single-item", *spec.stages], work, env, log)
            times["repro"] = time.time()
        lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
        stage_s = _stage_seconds(work / ".timer.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    times["end"] = time.time()
    marker = {
        "stages": list(spec.stages),
        "lock": {s: lock[s] for s in spec.stages},
        "seconds": {
            "total": times["end"] - times["start"],
            "stage": stage_s,
            "workspace": times["workspace"] - times["start"],
            "checkout": times["checkout"] - times["workspace"],
            "repro": times["repro"] - times["checkout"],
        },
        "host": os.uname().nodename,
    }
    atomic_write_text(Path(spec.marker), json.dumps(marker, indent=1, sort_keys=True) + "\n")
    return marker


def _scratch(spec: TaskSpec) -> Path:
    path = Path(spec.scratch)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prepare(spec: TaskSpec, work: Path, log) -> dict[str, str]:
    """Clone the commit into ``work`` (sharing its objects), write params, lock and the local DVC config."""
    _run(["git", "clone", "--quiet", "--shared", "--no-checkout", spec.root, str(work)], work.parent, None, log)
    _run(["git", "checkout", "--quiet", "--detach", spec.commit], work, None, log)
    (work / "params.yaml").write_text(spec.params)
    (work / "dvc.lock").write_text(spec.lock)
    link_data_root(spec, work)
    (work / ".dvc" / "config.local").write_text(
        f'[cache]\n    dir = {spec.cache_dir}\n    type = "reflink,hardlink,copy"\n'
    )
    bin_dir = work / ".timer-bin"
    bin_dir.mkdir()
    timer = bin_dir / "python"
    timer.write_text(STAGE_WRAPPER.format(python=sys.executable, log=work / ".timer.log"))
    timer.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        STORE_ENV: spec.cell_store,
    }


def link_data_root(spec: TaskSpec, work: Path) -> None:
    """Point a relative ``data_root`` of the clone at the main workspace's, like the cache.

    The image files are no DVC output: the download stage generates or checks them under ``data_root`` and the
    image-level methods and their evaluation read them. A task's clone would otherwise lack them (and lose the ones
    its download stage wrote). An absolute ``data_root`` (a shared dataset folder) is the same path for every task.
    """
    root = (yaml.safe_load(spec.params) or {}).get("data_root")
    if not root or Path(root).is_absolute():
        return
    target = (Path(spec.root) / root).resolve()
    target.mkdir(parents=True, exist_ok=True)
    link = work / root
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


def _dvc(args: list[str], work: Path, env: dict[str, str], log) -> None:
    _run([sys.executable, "-m", "dvc", *args], work, env, log)


def _run(args: list[str], cwd: Path, env: dict[str, str] | None, log) -> None:
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    proc = subprocess.run(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed (exit {proc.returncode}); see {log.name}")


def _stage_seconds(timer_log: Path) -> float:
    """Seconds spent inside stage commands (what the timer recorded)."""
    if not timer_log.is_file():
        return 0.0
    rows = [line.split() for line in timer_log.read_text().splitlines() if line.strip()]
    return sum(float(end) - float(start) for start, end, *_ in rows)
