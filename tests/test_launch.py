"""``clipbench launch``: stale stages fanned out through submitit on a real single-node SLURM cluster (or local
processes), compared byte for byte with a serial ``dvc repro``; a killed job and a re-launch; MLflow on a real
PostgreSQL; a team DVC remote pulled by a second clone that then recomputes nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_workspace import dvc_env, make_workspace, ran_stages, reduced_params, run
from services import postgres_mlflow, slurm_cluster

from clipbench.errors import ConfigError
from clipbench.launch import dag
from clipbench.launch.launcher import _clean_commit
from clipbench.launch.task import TaskSpec, link_data_root

METHODS = {"zeroshot": {}, "linear_probe": {}}  # the smallest suite with train and evaluate stages
TIMING = ["train_seconds", "eval_seconds"]


def test_short_stages_share_tasks_but_never_idle_a_slot():
    estimate = {"a": 500.0, "b": 10.0, "c": 10.0, "d": 10.0, "e": 10.0}
    tasks = dag.pack(list(estimate), estimate, short_s=300.0, slots=3)
    assert tasks[0].stages == ("a",) and sorted(s for t in tasks[1:] for s in t.stages) == ["b", "c", "d", "e"]
    assert len(tasks) == 3  # a alone, the four short ones over the two other slots
    one = dag.pack(["b", "c", "d"], estimate, short_s=300.0, slots=1)
    assert [t.stages for t in one] == [("b", "c", "d")]


def test_waves_follow_the_dag_and_leave_aggregate_and_track_to_the_final_repro():
    graph = {
        "code": (),
        "download@x": ("code",),
        "train@b-m-x": ("code", "download@x"),
        "evaluate@b-m": ("train@b-m-x",),
        "aggregate": ("evaluate@b-m",),
        "track": ("aggregate",),
    }
    stages = dag.to_run(graph, {"download@x"})
    assert stages == ["download@x", "train@b-m-x", "evaluate@b-m"]
    waves = dag.waves(stages, dict.fromkeys(stages, 1.0), short_s=300.0, slots=2)
    assert [[t.stages for t in w] for w in waves] == [[("download@x",)], [("train@b-m-x",)], [("evaluate@b-m",)]]


@pytest.mark.parametrize("data_root", ["data/raw", "ABSOLUTE"])
def test_a_task_sees_the_main_workspace_images(tmp_path, data_root):
    """The images are no DVC output: a task's clone reads (and its download stage writes) the main workspace's."""
    main, work = tmp_path / "main", tmp_path / "work"
    work.mkdir()
    root = str(tmp_path / "shared") if data_root == "ABSOLUTE" else data_root
    fields = dict.fromkeys(TaskSpec.__dataclass_fields__, "")
    spec = TaskSpec(**{**fields, "root": str(main), "params": yaml.safe_dump({"data_root": root})})
    link_data_root(spec, work)
    if data_root == "ABSOLUTE":
        assert not any(work.iterdir())  # the same path for every task
        return
    (work / root / "toy_objects").mkdir()  # what a download task writes lands in the main workspace
    assert (main / root / "toy_objects").is_dir()


def test_launch_refuses_uncommitted_code(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    with pytest.raises(ConfigError, match="no commit"):
        _clean_commit(tmp_path)
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "x.py").write_text("")
    run(["git", "add", "-A"], tmp_path)
    _commit(tmp_path)
    (tmp_path / "stages" / "x.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"stages/x.py differs from HEAD.*commit or stash"):
        _clean_commit(tmp_path)


def _commit(work: Path) -> None:
    run(["git", "add", "-A"], work)
    run(["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "snapshot"], work)


def _workspace(dest: Path, lock_from: Path | None = None) -> Path:
    """The reduced suite, committed; with ``lock_from``, with that workspace's ``dvc.lock`` (as if committed from a
    run elsewhere: its train outputs differ in their timings, so this cache holds none of them)."""
    work = make_workspace(dest, reduced_params(sources=1, targets=1, methods=METHODS))
    if lock_from is not None:
        shutil.copyfile(lock_from / "dvc.lock", work / "dvc.lock")
    _commit(work)
    return work


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The reduced suite reproduced serially by ``dvc repro``."""
    work = _workspace(tmp_path_factory.mktemp("serial"))
    run([sys.executable, "-m", "dvc", "repro"], work)
    return work


@pytest.fixture(scope="module")
def slurm():
    with slurm_cluster():
        yield


LAUNCH = [sys.executable, "-m", "clipbench.cli", "launch", "--max-parallel", "2"]


def _launch(work: Path, executor: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, "--executor", executor], cwd=work, env=dvc_env(), capture_output=True, text=True)


def _final_ran(out: str) -> set[str]:
    line = re.search(r"final dvc repro ran: (.*)", out).group(1)
    return set() if line == "nothing" else set(line.split(", "))


def _assert_same_results(work: Path, reference: Path) -> None:
    """Trained states, result rows (less their timings) and every report table are byte-identical."""
    states = sorted(p.relative_to(reference) for p in (reference / "models").rglob("state.safetensors"))
    assert states and sorted(p.relative_to(work) for p in (work / "models").rglob("state.safetensors")) == states
    assert all((work / p).read_bytes() == (reference / p).read_bytes() for p in states)
    frames = [pd.read_parquet(w / "reports" / "results.parquet").drop(columns=TIMING) for w in (work, reference)]
    pd.testing.assert_frame_equal(*frames)
    tables = {p.relative_to(reference): p.read_bytes() for p in (reference / "reports").rglob("*.csv")}
    assert tables and {p: (work / p).read_bytes() for p in tables} == tables


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CI") == "true", reason="CI runs the same launch on SLURM (test below)")
def test_local_launch_matches_serial_repro(reference, tmp_path):
    work = _workspace(tmp_path, lock_from=reference)
    proc = _launch(work, "local")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _final_ran(proc.stdout) == {"aggregate", "track"}
    _assert_same_results(work, reference)


def _start_launch(work: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([*LAUNCH, "--executor", "slurm"], cwd=work, env=dvc_env(), stdout=out, stderr=out)


def _running_train_task(work: Path, launch: subprocess.Popen, log: Path) -> str:
    """The SLURM id of an array task whose train stage command is running (waits for one)."""
    deadline = time.monotonic() + 600
    while not any("Running stage 'train@" in p.read_text() for p in work.glob(".launch/*/w1/train-*.log")):
        assert launch.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no train stage started"
        time.sleep(0.2)
    running = subprocess.run(["squeue", "-h", "-r", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True)
    return running.stdout.split()[0]


@pytest.mark.slow
def test_slurm_launch_matches_serial_repro_and_final_repro_recomputes_nothing(slurm, reference, tmp_path):
    """A job requeued mid-stage (as SLURM does on preemption) runs again; the launch still completes. The workspace
    starts with a ``dvc.lock`` from another run, whose train outputs this cache does not hold."""
    work, log = _workspace(tmp_path / "work", lock_from=reference), tmp_path / "launch.log"
    start = time.perf_counter()
    launch = _start_launch(work, log)
    victim = _running_train_task(work, launch, log)
    subprocess.run(["scontrol", "requeue", victim], check=True)
    state = ["squeue", "-h", "-j", victim, "-o", "%T"]
    for _ in range(300):  # once pending again, skip SLURM's two-minute delay before a requeued job may start
        if subprocess.run(state, capture_output=True, text=True).stdout.strip() == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={victim}", "StartTime=now"], check=True)
            break
        time.sleep(0.2)
    assert launch.wait(timeout=900) == 0, log.read_text()[-3000:]
    out = log.read_text()
    print(f"slurm launch of the reduced suite: {time.perf_counter() - start:.0f}s\n{out}")
    assert "launched train@" in out and "launched evaluate@" in out
    assert any(p.read_text().count("$ git clone") == 2 for p in work.glob(".launch/*/w1/train-*.log"))  # requeued
    assert _final_ran(out) == {"aggregate", "track"}  # every launched stage came from the run-cache
    _assert_same_results(work, reference)
    assert ran_stages(run([sys.executable, "-m", "dvc", "repro"], work)) == set()


@pytest.mark.slow
def test_a_job_killed_mid_stage_then_relaunched_gives_the_same_results(slurm, reference, tmp_path):
    work, log = _workspace(tmp_path / "work"), tmp_path / "first.log"
    first = _start_launch(work, log)
    subprocess.run(["scancel", "--full", "--signal=KILL", _running_train_task(work, first, log)], check=True)
    assert first.wait(timeout=600) != 0
    assert re.search(r"task\(s\) failed.*train@\S+ \(log \S+\.log", log.read_text()), log.read_text()[-3000:]
    assert not (work / "dvc.lock").exists()  # tasks never write the main workspace's lock

    again = _launch(work, "slurm")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    prep = sorted(work.glob(".launch/*/w0/code*.log"))[-1].read_text()  # the re-launch's preparation task
    assert "Running stage" not in prep and "is cached - skipping run" in prep  # restored, not recomputed
    assert _final_ran(again.stdout) == {"aggregate", "track"}
    _assert_same_results(work, reference)


@pytest.mark.slow
def test_a_second_clone_pulls_from_the_team_remote_and_recomputes_nothing(reference, tmp_path):
    remote = tmp_path / "remote"
    run([sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "team", str(remote)], reference)
    run([sys.executable, "-m", "dvc", "push", "--run-cache"], reference)
    _commit(reference)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(reference), str(clone)], tmp_path)
    run([sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "team", str(remote)], clone)
    run([sys.executable, "-m", "dvc", "pull", "--run-cache"], clone)
    assert ran_stages(run([sys.executable, "-m", "dvc", "repro"], clone)) == set()
    status = run([sys.executable, "-m", "dvc", "status", "--json"], clone).strip().splitlines()[-1]
    assert status == "{}"
    _assert_same_results(clone, reference)


@pytest.mark.slow
def test_track_logs_to_mlflow_on_postgresql_once(reference):
    from mlflow.tracking import MlflowClient

    with postgres_mlflow() as uri:
        params = yaml.safe_load((reference / "params.yaml").read_text())
        params["tracking"]["uri"] = uri
        (reference / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # the last test of the module (the reference workspace keeps this tracking URI)
        assert ran_stages(run([sys.executable, "-m", "dvc", "repro"], reference)) == {"track"}
        client = MlflowClient(tracking_uri=uri)
        experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("clipbench/")]
        runs = client.search_runs(experiments, max_results=5000)
        summary = yaml.safe_load((reference / "reports" / "tracking.json").read_text())
        assert summary["status"] == "ok" and summary["created"] > 0 and len(runs) >= summary["created"]
        run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "track"], reference)
        assert len(client.search_runs(experiments, max_results=5000)) == len(runs)  # nothing new
        assert yaml.safe_load((reference / "reports" / "tracking.json").read_text())["created"] == 0


def test_a_bad_suite_is_one_line_before_anything_is_submitted(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from clipbench.cli import main

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["methods"] = ["zeroshot", "no_such_method"]
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["launch", "--executor", "local", "--params", "suite.yaml"])
    assert out.exit_code == 2 and "no_such_method" in out.output and len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "params.yaml").exists() and not (tmp_path / ".launch").exists()
