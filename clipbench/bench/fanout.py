"""(i) ``clipbench launch`` fan-out overhead: the time tasks spend outside their stage commands, and the wall time
of the launched run (2 local slots) against the serial ``dvc repro`` of section (d), on the same reduced suite."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from clipbench.bench.dvc_overhead import _scratch_copy

SLOTS = 2


def fanout_overhead(root: Path, work: Path, params: dict, serial_wall_s: float) -> dict:
    """Launch ``params`` in a committed scratch copy with the local executor; time it and read its markers."""
    from clipbench.launch.launcher import LaunchConfig, final_repro, launch

    _scratch_copy(root, work, params)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], cwd=work, check=True)
    start = time.perf_counter()
    report = launch(work, LaunchConfig(executor="local", max_parallel=SLOTS))
    ran = final_repro(work)
    wall = time.perf_counter() - start
    tasks = report.launched
    parts = {k: sum(t["seconds"][k] for t in tasks) for k in ("workspace", "checkout", "repro", "total", "stage")}
    return {
        "tasks": len(tasks),
        "stages": sum(len(t["stages"]) for t in tasks),
        "slots": SLOTS,
        **{f"{k}_s": v for k, v in parts.items()},
        "share": report.overhead()["overhead"],
        "launch_wall_s": wall,
        "serial_wall_s": serial_wall_s,
        "final_ran": ran,
    }
