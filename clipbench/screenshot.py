"""Check the MLflow UI in a real headless browser: start ``mlflow ui`` on localhost, screenshot pages, stop it.

The server runs as a subprocess (``python -m mlflow ui``) on a free port of 127.0.0.1 against the given
tracking store; REST calls use only the standard library, and the browser is a headless Chromium (Debian's
``chromium`` package). Nothing here imports mlflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clipbench.errors import ClipbenchError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - localhost only
        return response.read()


@contextmanager
def mlflow_ui(uri: str, *, wait_s: float = 180.0) -> Iterator[str]:
    """Run ``mlflow ui`` on 127.0.0.1 for ``uri``; yield its base URL once ``/health`` answers; stop it after."""
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if _get(f"{base}/health").strip().upper().startswith(b"OK"):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read()[-2000:].decode(errors="replace")
                raise ClipbenchError(f"mlflow ui did not start on {base}: {tail}")
            time.sleep(1.0)
        yield base
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """End a process started with ``start_new_session=True`` and everything it spawned (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def experiment_id(base: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    return json.loads(_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}"))["experiment"]["experiment_id"]


def parent_run_ids(base: str, exp_id: str) -> list[str]:
    """Run ids of the current parent runs of an experiment (REST search)."""
    body = json.dumps(
        {
            "experiment_ids": [exp_id],
            "max_results": 100,
            "filter": "tags.`clipbench.role` = 'parent' and tags.`clipbench.current` = 'true'",
        }
    ).encode()
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - localhost only
        runs = json.loads(response.read()).get("runs", [])
    return [r["info"]["run_id"] for r in runs]


def capture(browser: str, url: str, out: Path, *, size: str = "1600,1000", budget_ms: int = 20000) -> Path:
    """Screenshot ``url`` with headless Chromium (``budget_ms`` of virtual time lets the app load its data)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    if not out.is_file():
        raise ClipbenchError(f"{browser} wrote no screenshot for {url}")
    return out


def screenshot_experiment(uri: str, experiment: str, out_dir: Path, browser: str | None = None) -> list[Path]:
    """Screenshot the experiment's runs table, its chart view and the compare view of its parent runs."""
    browser = browser or find_browser()
    if browser is None:
        raise ClipbenchError(f"no headless browser found (tried {', '.join(BROWSERS)}); `apt-get install chromium`")
    out_dir = Path(out_dir)
    with mlflow_ui(uri) as base:
        exp = experiment_id(base, experiment)
        runs = capture(browser, f"{base}/#/experiments/{exp}/runs", out_dir / "mlflow-runs.png", size="2000,900")
        charts = capture(
            browser,
            f"{base}/#/experiments/{exp}/runs?compareRunsMode=CHART",
            out_dir / "mlflow-charts.png",
            size="2000,1200",
            budget_ms=60000,
        )
        query = {"runs": json.dumps(parent_run_ids(base, exp)), "experiments": json.dumps([exp])}
        compare = f"{base}/#/compare-runs?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
        return [runs, charts, capture(browser, compare, out_dir / "mlflow-compare.png", size="1600,1400")]
