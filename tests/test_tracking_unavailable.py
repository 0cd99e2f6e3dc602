"""An unreachable or unwritable tracking store: ``track`` returns at once, warns once on one line, records
``status: unavailable`` and leaves every result file as it was."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from clipbench import tracking
from clipbench.config import SuiteConfig, TrackingConfig
from clipbench.errors import ConfigError
from clipbench.layout import Layout
from clipbench.pipeline import aggregate, track
from clipbench.typed import parse

from conftest import tiny_params
from test_report import make_results

ROOT = Path(__file__).resolve().parents[1]
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def closed_port_uri() -> str:
    """An http URI on a local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def unwritable_sqlite_uri(tmp_path: Path) -> str:
    """A sqlite path whose directory cannot be created: its parent is a regular file (holds even for root)."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    return f"sqlite:///{blocker / 'sub' / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def _project(tmp_path: Path, uri: str, timeout_s: float = 2.0) -> tuple[dict, Layout]:
    params = tiny_params(tracking={"enabled": True, "uri": uri, "timeout_s": timeout_s, "retries": 0})
    layout = Layout(tmp_path)
    results = make_results(methods=("zeroshot", "clip_adapter"), shots=(1, 16), seeds=(1, 2))
    aggregate.write_tables(results, None, layout.reports(), suite="test", template_set="custom")
    return params, layout


def _digests(reports: Path) -> dict[str, str]:
    return {
        str(p.relative_to(reports)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(reports.rglob("*"))
        if p.is_file() and p.name != "tracking.json"
    }


@pytest.mark.parametrize("kind", ["closed_port", "unwritable_sqlite"])
def test_track_warns_once_and_records_unavailable(kind, tmp_path, recwarn):
    uri = closed_port_uri() if kind == "closed_port" else unwritable_sqlite_uri(tmp_path)
    params, layout = _project(tmp_path, uri)
    before = _digests(layout.reports())
    assert "results.parquet" in before and "tables/few_shot.csv" in before
    cfg = parse(SuiteConfig, params, "test params")
    recwarn.clear()  # only what track.run emits counts
    summary = track.run(cfg=cfg, layout=layout)
    ours = [w for w in recwarn if issubclass(w.category, tracking.TrackingUnavailableWarning)]
    assert len(ours) == 1 and len(recwarn) == 1
    message = str(ours[0].message)
    assert uri in message and "\n" not in message and tracking.RETRY_COMMAND in message
    assert "results are still in reports/" in message and "tracking.uri in params.yaml" in message
    recorded = json.loads((layout.reports() / "tracking.json").read_text())
    assert recorded == summary and recorded["status"] == "unavailable" and recorded["uri"] == uri
    assert recorded["error"] and recorded["retry"] == tracking.RETRY_COMMAND
    assert _digests(layout.reports()) == before


def test_probe_tells_reachable_from_unreachable_stores(tmp_path):
    assert "ConnectionRefusedError" in tracking.probe(closed_port_uri(), 2.0)
    assert tracking.probe(unwritable_sqlite_uri(tmp_path), 2.0) is not None
    assert tracking.probe(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}", 2.0) is None
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []  # the test file is gone
    assert tracking.probe(f"file://{tmp_path / 'mlruns'}", 2.0) is None
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert tracking.probe(f"http://127.0.0.1:{server.getsockname()[1]}", 2.0) is None


def test_a_host_that_does_not_answer_is_reported_after_the_timeout(monkeypatch):
    def silent(address, timeout):
        assert timeout == 0.5
        raise TimeoutError("timed out")

    monkeypatch.setattr(tracking.socket, "create_connection", silent)
    assert tracking.probe("https://tracking.invalid", 0.5) == "no answer within 0.5 s"


def test_a_server_that_accepts_but_never_replies_is_bounded_by_mlflow_timeouts(caplog, recwarn):
    """The probe passes (the port listens); MLflow's request then times out after one bounded retry."""
    results = make_results(methods=("zeroshot",), shots=(16,), seeds=(1,))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        summary = tracking.log_results(
            results, uri=uri, experiment_prefix="cb", configs={}, lineage={}, timeout_s=1, retries=1
        )
    assert summary["status"] == "unavailable" and "timed out" in summary["error"].lower()
    assert len([w for w in recwarn if issubclass(w.category, tracking.TrackingUnavailableWarning)]) == 1
    assert not [r for r in caplog.records if r.name.startswith("urllib3") and r.levelno >= 30]


def test_mlflow_http_bounds_are_set_for_the_call_only(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with tracking._bounded_http(2.5, 1):
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9" and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_tracking_timeout_and_retries_are_validated():
    with pytest.raises(ConfigError, match="timeout_s"):
        parse(TrackingConfig, {"timeout_s": 0}, "params.yaml: tracking")
    with pytest.raises(ConfigError, match="retries"):
        parse(TrackingConfig, {"retries": -1}, "params.yaml: tracking")
    assert replace(TrackingConfig(), timeout_s=1.5).timeout_s == 1.5


def test_track_stage_shows_the_warning_once_on_one_line(tmp_path):
    uri = closed_port_uri()
    params, layout = _project(tmp_path, uri)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "stages.track"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "MLflow tracking at" in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("WARNING clipbench.tracking: ") and tracking.RETRY_COMMAND in lines[0]
    assert "TrackingUnavailableWarning" not in proc.stderr
    assert json.loads((layout.reports() / "tracking.json").read_text())["status"] == "unavailable"
