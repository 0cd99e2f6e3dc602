"""The accuracy gate: regressions and missing cells fail with a readable report; small changes pass."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from clipbench import check as gate
from clipbench.cli import main
from clipbench.methods.zeroshot import ZeroShotCLIP
from clipbench.pipeline import aggregate, evaluate

METRICS = {
    "few_shot": {
        "toy_vit": {
            "clip_adapter": {"toy_objects": {"16shot_acc": 60.0, "1shot_acc": 45.0}},
            "zeroshot": {"toy_objects": {"16shot_acc": 50.0}},
        }
    }
}


def _files(tmp_path, metrics=METRICS):
    m, b = tmp_path / "metrics.json", tmp_path / "baseline.json"
    m.write_text(json.dumps(metrics))
    return m, b


def _invoke(*args):
    return CliRunner().invoke(main, ["check", *map(str, args)])


def test_two_point_drop_on_one_cell_is_caught_by_name(tmp_path):
    m, b = _files(tmp_path)
    assert _invoke("--metrics", m, "--baseline", b, "--update-baseline").exit_code == 0
    dropped = json.loads(json.dumps(METRICS))
    dropped["few_shot"]["toy_vit"]["clip_adapter"]["toy_objects"]["16shot_acc"] = 58.0
    m.write_text(json.dumps(dropped))
    out = _invoke("--metrics", m, "--baseline", b)
    assert out.exit_code == 1
    assert "| regression | few_shot/toy_vit/clip_adapter/toy_objects/16shot_acc | 60.00 | 58.00 | -2.00" in out.output
    assert "FAIL" in out.output


def test_change_within_tolerance_passes_and_improvement_is_reported(tmp_path):
    m, b = _files(tmp_path)
    _invoke("--metrics", m, "--baseline", b, "--update-baseline")
    moved = json.loads(json.dumps(METRICS))
    moved["few_shot"]["toy_vit"]["clip_adapter"]["toy_objects"]["16shot_acc"] = 59.5
    moved["few_shot"]["toy_vit"]["zeroshot"]["toy_objects"]["16shot_acc"] = 53.0
    m.write_text(json.dumps(moved))
    out = _invoke("--metrics", m, "--baseline", b)
    assert out.exit_code == 0, out.output
    assert "improvement" in out.output and "PASS" in out.output


def test_missing_cell_fails(tmp_path):
    m, b = _files(tmp_path)
    _invoke("--metrics", m, "--baseline", b, "--update-baseline")
    fewer = json.loads(json.dumps(METRICS))
    del fewer["few_shot"]["toy_vit"]["clip_adapter"]["toy_objects"]["1shot_acc"]
    m.write_text(json.dumps(fewer))
    out = _invoke("--metrics", m, "--baseline", b)
    assert out.exit_code == 1 and "| missing | few_shot/toy_vit/clip_adapter/toy_objects/1shot_acc" in out.output


def test_per_metric_tolerance_and_update_keeps_it(tmp_path):
    current = gate.flatten(METRICS)
    base = gate.updated_baseline(current, None)
    base["metrics"]["few_shot/toy_vit/zeroshot/toy_objects/16shot_acc"]["tolerance"] = 5.0
    current["few_shot/toy_vit/zeroshot/toy_objects/16shot_acc"] = 46.0
    assert not gate.failed(gate.compare(current, base))
    again = gate.updated_baseline(current, base)
    assert again["metrics"]["few_shot/toy_vit/zeroshot/toy_objects/16shot_acc"] == {"value": 46.0, "tolerance": 5.0}


def test_missing_files_give_clear_errors(tmp_path):
    out = _invoke("--metrics", tmp_path / "nope.json", "--baseline", tmp_path / "b.json")
    assert out.exit_code == 2 and "run `dvc repro` first" in out.output
    m, _ = _files(tmp_path)
    out = _invoke("--metrics", m, "--baseline", tmp_path / "b.json")
    assert out.exit_code == 2 and "--update-baseline" in out.output


def test_degraded_method_fails_the_gate_end_to_end(fresh, tmp_path, monkeypatch):
    """A perturbed prediction rule, run through evaluate + aggregate, is reported as a regression."""
    cfg, layout, *_ = fresh
    baseline = tmp_path / "baseline.json"
    metrics = layout.reports() / "metrics.json"
    assert _invoke("--metrics", metrics, "--baseline", baseline, "--update-baseline").exit_code == 0

    def degraded(self, x, target):
        logits = ZeroShotCLIP.__dict__["_original"](self, x, target)
        return logits + 1e3 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(ZeroShotCLIP, "_original", ZeroShotCLIP.predict, raising=False)
    monkeypatch.setattr(ZeroShotCLIP, "predict", degraded)
    shutil.rmtree(layout.results("toy_vit", "zeroshot"))
    evaluate.run(backbone="toy_vit", method="zeroshot", cfg=cfg, layout=layout)
    aggregate.run(cfg=cfg, layout=layout)
    out = _invoke("--metrics", metrics, "--baseline", baseline)
    assert out.exit_code == 1
    assert "| regression | " in out.output and "/zeroshot/" in out.output


@pytest.fixture
def fresh(project):
    from test_pipeline import run_all

    cfg, layout, data_root = project
    run_all(cfg, layout, data_root)
    return cfg, layout, data_root
