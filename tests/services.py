"""Real services started by the tests themselves: a single-node SLURM cluster and PostgreSQL + ``mlflow server``.

Each starts only when its binaries are installed (else the test skips, naming the packages; under ``CI=true`` a
missing binary fails the test) and stops the processes it started, by their process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipbench.screenshot import stop_group

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SLURM_CONF = """ClusterName=ci
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation={state}/slurmctld
SlurmdSpoolDir={state}/slurmd
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def require(binaries: list[str], packages: str) -> None:
    """Skip (fail under CI=true) unless every binary is found."""
    missing = [b for b in binaries if not (shutil.which(b) or Path(b).is_file())]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install {packages})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI installs them (.ci/run)")
        pytest.skip(message)
    if os.geteuid() != 0:
        pytest.skip("starting these services needs root (daemons and their users)")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        stop_group(proc)


def _memory_mb() -> int:
    total_kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
    return int(total_kb / 1024 * 0.8)


@contextlib.contextmanager
def slurm_cluster() -> Iterator[None]:
    """munged, slurmctld and slurmd on localhost with their own config (``$SLURM_CONF``, free ports, a scratch
    state directory: an installed cluster's configuration is left alone), until the node is idle."""
    require(["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel"], "slurm-wlm munge")
    state = Path(tempfile.mkdtemp(prefix="clipbench-slurm-"))
    for sub in ("slurmctld", "slurmd"):
        (state / sub).mkdir()
    conf = state / "slurm.conf"
    ports = {"ctld_port": free_port(), "slurmd_port": free_port()}
    conf.write_text(SLURM_CONF.format(state=state, cpus=os.cpu_count(), memory=_memory_mb(), **ports))
    saved, os.environ["SLURM_CONF"] = os.environ.get("SLURM_CONF"), str(conf)  # for sbatch, squeue, scancel
    subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "/run/munge"], check=True)
    procs = [_start(["runuser", "-u", "munge", "--", "munged", "-F", "-f"], state / "munged.out")]
    try:
        time.sleep(1)
        procs.append(_start(["slurmctld", "-D", "-c", "-i", "-f", str(conf)], state / "slurmctld.out"))
        procs.append(_start(["slurmd", "-D", "-f", str(conf)], state / "slurmd.out"))
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, f"SLURM node not idle in 60 s; logs in {state}"
            time.sleep(1)
        yield
    finally:
        _stop(procs)
        os.environ.pop("SLURM_CONF") if saved is None else os.environ.update(SLURM_CONF=saved)
        shutil.rmtree(state, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_mlflow() -> Iterator[str]:
    """A throwaway PostgreSQL cluster and an ``mlflow server`` on it; yields the server's http URI."""
    require([str(PG_BIN / "initdb"), str(PG_BIN / "pg_ctl"), "runuser"], "postgresql-15")
    scratch = Path(tempfile.mkdtemp(prefix="clipbench-pg-"))
    shutil.chown(scratch, "postgres")
    pg_port, port = free_port(), free_port()
    as_pg = ["runuser", "-u", "postgres", "--"]
    initdb = [*as_pg, PG_BIN / "initdb", "-D", scratch / "data", "-A", "trust", "-U", "clipbench"]
    subprocess.run(initdb, check=True, capture_output=True)
    opts = f"-p {pg_port} -k {scratch} -c listen_addresses=127.0.0.1"
    start = [*as_pg, PG_BIN / "pg_ctl", "-D", scratch / "data", "-o", opts, "-l", scratch / "log", "-w", "start"]
    subprocess.run(start, check=True, capture_output=True)
    procs = []
    try:
        create = [*as_pg, PG_BIN / "createdb", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "clipbench", "mlflow"]
        subprocess.run(create, check=True)
        store = f"postgresql+psycopg2://clipbench@127.0.0.1:{pg_port}/mlflow"
        artifacts = Path(tempfile.mkdtemp(prefix="clipbench-artifacts-"))
        server = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
        server += ["--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port)]
        procs.append(_start(server, scratch / "mlflow.out"))
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{uri}/health", timeout=2).read().strip() == b"OK":
                    break
            assert procs[0].poll() is None, (scratch / "mlflow.out").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
            time.sleep(1)
        yield uri
    finally:
        _stop(procs)
        subprocess.run([*as_pg, PG_BIN / "pg_ctl", "-D", scratch / "data", "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
