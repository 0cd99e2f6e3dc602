"""(d) DVC bookkeeping as a share of a ``dvc repro`` of the reduced toy suite, and a no-op ``dvc repro``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clipbench.errors import ConfigError
from clipbench.launch.task import STAGE_WRAPPER

_COPY_SKIP = ("reports/", "dvc.lock", "data/", "models/", "features/", "results/", "mlruns/", "mlflow.db")


def stage_table(params: dict) -> dict[str, int]:
    """Stages per ``dvc.yaml`` stage kind for ``params`` (see docs/design.md), in pipeline order."""
    b, d, t, m = (len(params.get(k) or []) for k in ("backbones", "datasets", "targets", "methods"))
    return {
        "code": 1,
        "download": d,
        "download_target": t,
        "split": d,
        "backbone": b,
        "extract": b * d,
        "extract_target": b * t,
        "train": b * m * d,
        "evaluate": b * m,
        "aggregate": 1,
        "track": 1,
    }


def stage_count(params: dict) -> int:
    """Stages ``dvc.yaml`` expands to for ``params``."""
    return sum(stage_table(params).values())


def parse_stage_log(text: str) -> list[tuple[str, float]]:
    """(stage command, seconds) of every ``python -m stages.*`` line the wrapper logged."""
    rows = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and "stages." in parts[3]:
            rows.append((parts[3], float(parts[1]) - float(parts[0])))
    return rows


def stage_kinds(stages: list[tuple[str, float]]) -> dict[str, list[float]]:
    """Stage process count and summed seconds per stage module (``stages.extract`` -> [n, seconds])."""
    kinds: dict[str, list[float]] = {}
    for command, seconds in stages:
        kind = next((t for t in command.split() if t.startswith("stages.")), command)
        entry = kinds.setdefault(kind.removeprefix("stages."), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds
    return kinds


def _import_floor(work: Path, env: dict) -> float:
    """Seconds a stage process spends before any work: interpreter start + ``import stages._common``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import stages._common"], cwd=work, env=env, check=True)
    return time.perf_counter() - start


def _scratch_copy(root: Path, work: Path, params: dict) -> None:
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True)
    if listing.returncode != 0:
        raise ConfigError(
            f"bench: {root} is not a git checkout of the project ({listing.stderr.strip()}); run "
            "`clipbench bench` from the project root"
        )
    files = listing.stdout.split()
    for name in files:
        if name.startswith(_COPY_SKIP) or not (root / name).is_file():
            continue
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, work / name)
    import yaml

    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)


def _dvc_repro(work: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro failed in {work}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout + proc.stderr


def dvc_overhead(root: Path, work: Path, params: dict) -> dict:
    """Wall time of ``dvc repro`` vs the summed wall time of its stage processes; then a no-op repro."""
    if not (root / "dvc.yaml").is_file():
        raise ConfigError(f"bench: {root} has no dvc.yaml; run `clipbench bench` from the project root")
    _scratch_copy(root, work, params)
    log, bin_dir = work / ".bench_stages.log", work / ".bench_bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"
    wrapper.write_text(STAGE_WRAPPER.format(python=sys.executable, log=log))
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    wall, out = _dvc_repro(work, env)
    stages = parse_stage_log(log.read_text())
    noop_wall, noop_out = _dvc_repro(work, env)
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    stage_s = sum(s for _, s in stages)
    return {
        "stages": len(stages),
        "stages_reported": len(ran),
        "wall_s": wall,
        "stage_s": stage_s,
        "by_kind": stage_kinds(stages),
        "import_s": _import_floor(work, env),
        "bookkeeping_s": wall - stage_s,
        "share": (wall - stage_s) / wall,
        "noop_s": noop_wall,
        "noop_ran": len(re.findall(r"Running stage '", noop_out)),
        "per_stage_s": (wall - stage_s) / max(1, len(stages)),
    }
