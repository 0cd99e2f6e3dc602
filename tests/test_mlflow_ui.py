"""The MLflow UI in a real headless browser after a toy run (skipped where Chromium is not installed)."""

from __future__ import annotations

import pytest

from clipbench.screenshot import find_browser, screenshot_experiment

from test_report import make_results
from test_tracking import _log

pytestmark = pytest.mark.skipif(find_browser() is None, reason="headless Chromium not installed")


def test_ui_serves_parent_runs_and_screenshots_them(tmp_path, mlflow_uri):
    uri = mlflow_uri
    _log(make_results(shots=(16,), seeds=(1, 2)), tmp_path, uri)
    shots = screenshot_experiment(uri, "cb/base2new", tmp_path / "shots")
    assert [p.name for p in shots] == ["mlflow-runs.png", "mlflow-charts.png", "mlflow-compare.png"]
    for path in shots:
        data = path.read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 20_000  # a rendered page, not a blank canvas
