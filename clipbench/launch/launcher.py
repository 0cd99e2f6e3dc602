"""Submit the waves of stale stages through submitit (SLURM job arrays, or local processes), wait, report.

Completion is read from each task's own marker (:mod:`clipbench.launch.task`), never from the scheduler's state
alone: without SLURM accounting, a cancelled job and a finished one look the same to submitit. A task whose job
is gone without a marker failed; the launch stops after that wave and names each failed task's log. SLURM jobs
are submitted with ``--requeue`` and the task is a submitit ``Checkpointable``: a preempted or timed-out task
is requeued by submitit and starts again in a fresh workspace (finished cells come back from the cell store).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import yaml

from clipbench.cells import STORE_DIR, STORE_ENV
from clipbench.errors import ClipbenchError, ConfigError
from clipbench.io import atomic_write_text
from clipbench.launch import dag
from clipbench.launch.task import TaskSpec

log = logging.getLogger(__name__)
COMPUTE = ("backbone", "extract", "extract_target", "train", "evaluate")  # stage kinds that get the GPUs
UNPLANNED_S = 30.0  # estimated seconds of a stage the plan does not cost (code, download, split)


class LaunchError(ClipbenchError):
    """A launch that could not start or whose tasks failed (the message names each failed task's log)."""


@dataclass(frozen=True)
class LaunchConfig:
    """How ``clipbench launch`` submits (command-line options; nothing here changes a result)."""

    executor: Literal["slurm", "local"] = "slurm"
    max_parallel: int = 4  # tasks running at once (SLURM: the job array's parallelism)
    short_s: float = 300.0  # stages estimated shorter than this share a task
    gpus: int = 0  # GPUs per task of a compute stage (COMPUTE)
    cpus: int = 1  # CPUs per task
    mem_gb: float = 2.0  # memory per task at least (more where the plan's peak needs it)
    partition: str | None = None
    folder: Path | None = None  # logs, markers and workspaces (default .launch/ in the project; shared for SLURM)
    poll_s: float = 1.0

    def validate(self) -> None:
        if self.executor not in ("slurm", "local"):
            raise ConfigError(f"launch --executor: {self.executor!r} is not an executor; use slurm or local")
        if self.max_parallel < 1 or self.cpus < 1 or self.gpus < 0 or self.mem_gb <= 0:
            raise ConfigError("launch: --max-parallel and --cpus must be >= 1, --gpus >= 0 and --mem-gb > 0")


@dataclass
class LaunchReport:
    """What a launch ran: per task its stages and the seconds of its marker."""

    launched: list[dict] = field(default_factory=list)
    up_to_date: bool = False

    def overhead(self) -> dict[str, float]:
        """Seconds inside stage commands and in all, summed over tasks, and the share outside the stages."""
        stage = sum(t["seconds"]["stage"] for t in self.launched)
        total = sum(t["seconds"]["total"] for t in self.launched)
        return {"stage_s": stage, "task_s": total, "overhead": (total - stage) / stage if stage else 0.0}


def launch(root: Path, cfg: LaunchConfig, estimate=None) -> LaunchReport:
    """Run every stale stage of the project at ``root`` (except :data:`dag.FINAL`) as launched tasks.

    ``estimate`` maps a stage name to its estimated seconds (default: :func:`plan_estimates`).
    """
    cfg.validate()
    root = Path(root).resolve()
    commit = _clean_commit(root)
    stages = dag.to_run(graph := dag.stage_graph(root), dag.stale_stages(root, _env()))
    if not stages:
        return LaunchReport(up_to_date=True)
    estimate = estimate or plan_estimates(root / "params.yaml", stages)
    folder = (cfg.folder or root / ".launch").resolve() / time.strftime("%Y%m%d-%H%M%S")
    lock = _read_lock(root)
    base = TaskSpec(
        root=str(root),
        commit=commit,
        stages=(),
        upstream=(),
        lock="",
        params=(root / "params.yaml").read_text(),
        cache_dir=_cache_dir(root),
        cell_store=str(Path(os.environ.get(STORE_ENV) or root / STORE_DIR).resolve()),
        scratch=str(folder / "work"),
        marker="",
        log="",
    )
    report = LaunchReport()
    for number, wave in enumerate(dag.waves(stages, estimate, cfg.short_s, cfg.max_parallel)):
        text = yaml.safe_dump({"schema": "2.0", "stages": lock}, sort_keys=False)
        specs = [_spec(base, task, graph, text, folder / f"w{number}") for task in wave]
        markers = _run_wave(wave, specs, cfg, folder / "submitit")
        for marker in markers:
            lock.update(marker["lock"])
            report.launched.append(marker)
    _record_lock(root, lock)
    shutil.rmtree(folder / "work", ignore_errors=True)  # what killed tasks left (a failed launch keeps it to look at)
    return report


def _spec(base: TaskSpec, task: dag.Task, graph, lock: str, folder: Path) -> TaskSpec:
    upstream = sorted({u for s in task.stages for u in graph[s]} - set(task.stages))
    return replace(
        base,
        stages=task.stages,
        upstream=tuple(upstream),
        lock=lock,
        marker=str(folder / f"{task.name}.done.json"),
        log=str(folder / f"{task.name}.log"),
    )


def _executor(cfg: LaunchConfig, folder: Path, resources: dict):
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=cfg.executor)
    params = {"timeout_min": resources["timeout_min"], "cpus_per_task": cfg.cpus, "name": "clipbench"}
    if cfg.executor == "slurm":
        params.update(
            mem_gb=resources["mem_gb"],
            gpus_per_node=resources["gpus"],
            slurm_array_parallelism=cfg.max_parallel,
            slurm_additional_parameters={"requeue": True},
            **({"slurm_partition": cfg.partition} if cfg.partition else {}),
        )
    elif resources["gpus"]:
        params["gpus_per_node"] = resources["gpus"]
    executor.update_parameters(**params)
    return executor


def _resources(task: dag.Task, cfg: LaunchConfig) -> dict:
    compute = any(dag.kind(s) in COMPUTE for s in task.stages)
    return {
        "gpus": cfg.gpus if compute else 0,
        "mem_gb": cfg.mem_gb,
        "timeout_min": max(10, math.ceil(3 * task.seconds / 60)),  # 3x the estimate, at least 10 minutes
    }


def _run_wave(wave: list[dag.Task], specs: list[TaskSpec], cfg: LaunchConfig, folder: Path) -> list[dict]:
    """Submit the wave's tasks (SLURM: one array per resource shape), wait for each, return their markers."""
    from clipbench.launch.job import Job

    for spec in specs:
        Path(spec.marker).unlink(missing_ok=True)
    shapes = [tuple(sorted(_resources(task, cfg).items())) for task in wave]
    todo, jobs, failed = list(range(len(wave))), {}, []
    if cfg.executor == "slurm":  # SLURM throttles the array to max_parallel itself
        for shape in dict.fromkeys(shapes):
            members = [i for i in todo if shapes[i] == shape]
            submitted = _executor(cfg, folder, dict(shape)).map_array(Job(), [specs[i] for i in members])
            jobs.update(zip(members, submitted, strict=True))
        todo = []
    while (todo or jobs) and not failed:
        while todo and len(jobs) < cfg.max_parallel:
            i = todo.pop(0)
            jobs[i] = _executor(cfg, folder, dict(shapes[i])).submit(Job(), specs[i])
        failed += _wait_one(jobs, specs, cfg)
    if failed:
        for job in jobs.values():
            job.cancel(check=False)
        named = "; ".join(f"{' '.join(specs[i].stages)} (log {specs[i].log}, job log {path})" for i, path in failed)
        raise LaunchError(
            f"launch: task(s) failed and nothing of theirs was recorded; `clipbench launch` again retries the stale "
            f"stages: {named}"
        )
    return [json.loads(Path(spec.marker).read_text()) for spec in specs]


def _wait_one(jobs: dict, specs: list[TaskSpec], cfg: LaunchConfig) -> list[tuple[int, str]]:
    """Block until at least one job ends and drop the ended ones from ``jobs``; return (index, job log) of those
    that ended without their marker."""
    while True:
        alive = _alive_slurm() if cfg.executor == "slurm" else None
        ended = [i for i, job in jobs.items() if Path(specs[i].marker).is_file() or not _running(job, alive)]
        if ended:
            time.sleep(cfg.poll_s)  # a marker written on another node may show up a moment later
            failed = [(i, str(jobs[i].paths.stderr)) for i in ended if not Path(specs[i].marker).is_file()]
            for i in ended:
                del jobs[i]
            return failed
        time.sleep(cfg.poll_s)


def _running(job, alive: set[str] | None) -> bool:
    return not job.done() if alive is None else job.job_id in alive


def _alive_slurm() -> set[str]:
    """Job ids SLURM still holds (pending, running, requeued); array tasks one by one."""
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


def final_repro(root: Path) -> list[str]:
    """``dvc repro`` in the main workspace (restores launched stages from the run-cache, runs :data:`dag.FINAL`,
    writes ``dvc.lock`` once); returns the stages it ran."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=root, env=_env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LaunchError(f"launch: the final `dvc repro` failed in {root}:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr)


def _env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _clean_commit(root: Path) -> str:
    """HEAD of ``root``; the code and pipeline files must be committed (tasks check out the commit)."""
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        raise ConfigError(f"launch: {root} has no commit; tasks check out HEAD: commit the project first")
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "clipbench", "stages", "dvc.yaml", ".dvc/config", ".dvcignore"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    if dirty:
        raise ConfigError(
            f"launch: {dirty[0][3:]} differs from HEAD; tasks run the commit: commit or stash the changes"
        )
    return head.stdout.strip()


def _read_lock(root: Path) -> dict:
    path = root / "dvc.lock"
    return dict((yaml.safe_load(path.read_text()) or {}).get("stages") or {}) if path.is_file() else {}


def _record_lock(root: Path, lock: dict) -> None:
    """Give the main ``dvc.lock`` the entries the tasks returned (one atomic write, only after every wave succeeded).

    Needed because a stage's outputs need not be byte-identical between runs (a cell's ``train_seconds``): an entry
    left from an earlier run (committed, or made on another machine) names outputs the cache may not hold, and DVC
    then re-runs the stage without looking at the run-cache entry the task saved. With the task's own entry the
    final ``dvc repro`` finds the dependencies unchanged and checks the outputs out of the shared cache.
    """
    atomic_write_text(root / "dvc.lock", yaml.safe_dump({"schema": "2.0", "stages": lock}, sort_keys=False))


def _cache_dir(root: Path) -> str:
    """The main workspace's DVC cache directory (``cache.dir``, default ``.dvc/cache``), absolute."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "cache", "dir"], cwd=root, env=_env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise LaunchError(f"launch: `dvc cache dir` failed in {root}: {proc.stderr.strip()[-300:]}")
    return str((root / proc.stdout.strip().splitlines()[-1]).resolve())


def plan_estimates(params: Path, stages: list[str]) -> dict[str, float]:
    """Estimated seconds per stage from ``clipbench plan`` (train/evaluate: the method's FLOPs shared over its
    stages; extraction: the backbone's shared over its datasets); every stage :data:`UNPLANNED_S` more."""
    from clipbench import plan
    from clipbench.config import load_suite

    suite = load_suite(params)
    seconds = dict.fromkeys(stages, UNPLANNED_S)
    try:
        p = plan.suite_plan(suite)
    except ConfigError as exc:  # e.g. a custom dataset declares no sizes: every stage gets the flat estimate
        log.warning("launch: no plan estimates (%s); every stage is estimated at %.0f s", exc, UNPLANNED_S)
        return seconds
    per_method = len(suite.backbones) * (len(suite.datasets) + 1)  # its train stages and its evaluate stage
    for row in p.methods:
        for b in suite.backbones:
            names = [f"evaluate@{b}-{row.method}", *(f"train@{b}-{row.method}-{d}" for d in suite.datasets)]
            seconds.update({n: UNPLANNED_S + p.hours(row.flops / per_method) * 3600 for n in names if n in seconds})
    for row in p.shared:
        share = UNPLANNED_S + p.hours(row.flops / len(suite.all_datasets())) * 3600
        names = [f"{k}@{row.backbone}-{d}" for k in ("extract", "extract_target") for d in suite.all_datasets()]
        seconds.update({n: share for n in names if n in seconds})
    return seconds
