"""The gate: two-sided metric changes, exact training invariants, missing entries, and every way found so far to
disarm or wipe it (bad tolerances, unknown keys, empty runs, updates that drop or add entries)."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from clipbench import check as gate
from clipbench.cells import shared_store
from clipbench.cli import main
from clipbench.invariants import evaluation_invariants, training_invariants
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
INVARIANTS = {
    "toy_vit/clip_adapter/toy_objects/all_shot16_seed1/steps": 40,
    "toy_vit/clip_adapter/toy_objects/all_shot16_seed1/trainable_params": 1056,
    "toy_vit/clip_adapter/toy_objects/all_shot16_seed1/final_loss": 0.8125,
}
ADAPTER = "few_shot/toy_vit/clip_adapter/toy_objects/16shot_acc"


def _files(tmp_path, metrics=METRICS, invariants=INVARIANTS):
    m, b = tmp_path / "metrics.json", tmp_path / "baseline.json"
    m.write_text(json.dumps(metrics))
    (tmp_path / "invariants.json").write_text(json.dumps(invariants))
    return m, b


def _invoke(*args):
    return CliRunner().invoke(main, ["check", *map(str, args)])


def _baselined(tmp_path):
    m, b = _files(tmp_path)
    assert _invoke("--metrics", m, "--baseline", b, "--update-baseline").exit_code == 0
    return m, b


def _with(name, value, tree=METRICS):
    out = json.loads(json.dumps(tree))
    node = out
    *path, leaf = name.split("/")
    for key in path:
        node = node[key]
    node[leaf] = value
    return out


def test_two_point_drop_on_one_cell_is_caught_by_name(tmp_path):
    m, b = _baselined(tmp_path)
    m.write_text(json.dumps(_with(ADAPTER, 58.0)))
    out = _invoke("--metrics", m, "--baseline", b)
    assert out.exit_code == 1
    assert f"| regression | metric | {ADAPTER} | 60.00 | 58.00 | -2.00" in out.output
    assert "FAIL" in out.output


def test_gate_is_two_sided(tmp_path):
    """Within tolerance passes either way; an improvement beyond it fails until accepted with --update-baseline."""
    m, b = _baselined(tmp_path)
    m.write_text(json.dumps(_with(ADAPTER, 60.9)))
    assert _invoke("--metrics", m, "--baseline", b).exit_code == 0
    m.write_text(json.dumps(_with(ADAPTER, 63.0)))
    out = _invoke("--metrics", m, "--baseline", b)
    assert out.exit_code == 1 and f"| improvement | metric | {ADAPTER} | 60.00 | 63.00 | +3.00" in out.output
    assert _invoke("--metrics", m, "--baseline", b, "--update-baseline").exit_code == 0
    assert _invoke("--metrics", m, "--baseline", b).exit_code == 0


def test_missing_cell_fails(tmp_path):
    m, b = _baselined(tmp_path)
    fewer = json.loads(json.dumps(METRICS))
    del fewer["few_shot"]["toy_vit"]["clip_adapter"]["toy_objects"]["1shot_acc"]
    m.write_text(json.dumps(fewer))
    out = _invoke("--metrics", m, "--baseline", b)
    assert (
        out.exit_code == 1 and "| missing | metric | few_shot/toy_vit/clip_adapter/toy_objects/1shot_acc" in out.output
    )


def test_per_metric_tolerance_and_update_keeps_it(tmp_path):
    current = gate.flatten(METRICS)
    base = gate.updated_baseline(current, {}, None)
    name = "few_shot/toy_vit/zeroshot/toy_objects/16shot_acc"
    base.metrics[name] = gate.Entry(50.0, 5.0)
    current[name] = 46.0
    assert not gate.failed(gate.compare(current, base))
    again = gate.updated_baseline(current, {}, base)
    assert again.as_json()["metrics"][name] == {"value": 46.0, "tolerance": 5.0}


def test_missing_files_give_clear_errors(tmp_path):
    out = _invoke("--metrics", tmp_path / "nope.json", "--baseline", tmp_path / "b.json")
    assert out.exit_code == 2 and "run `dvc repro` first" in out.output
    m, _ = _files(tmp_path)
    out = _invoke("--metrics", m, "--baseline", tmp_path / "b.json")
    assert out.exit_code == 2 and "--update-baseline" in out.output


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda d: d.update(default_tolerance=math.nan), "default_tolerance"),
        (lambda d: d.update(default_tolerance=math.inf), "default_tolerance"),
        (lambda d: d.update(default_tolerance=-1.0), "default_tolerance"),
        (lambda d: d.update(invariant_rel_tolerance=math.inf), "invariant_rel_tolerance"),
        (lambda d: d["metrics"][ADAPTER].update(tolerance=math.nan), f"metrics/{ADAPTER}/tolerance"),
        (lambda d: d["metrics"][ADAPTER].update(tolerance=-0.5), f"metrics/{ADAPTER}/tolerance"),
        (lambda d: d["metrics"][ADAPTER].update(tolerance="1"), f"metrics/{ADAPTER}/tolerance"),
        (lambda d: d["metrics"][ADAPTER].update(value=math.inf), f"metrics/{ADAPTER}/value"),
        (lambda d: d["metrics"][ADAPTER].update(tolerence=9.0), f"metrics/{ADAPTER}/tolerence"),
        (lambda d: d.update(default_tolerence=99.0), "default_tolerence"),
        (lambda d: d.update(metrics={}), "metrics"),
        (lambda d: d.pop("schema"), "schema"),
        (lambda d: d.update(schema=1), "schema"),
        (lambda d: d["invariants"].update(x=math.nan), "invariants/x"),
    ],
)
def test_a_disarmed_baseline_is_refused_naming_file_and_key(tmp_path, edit, key):
    """NaN/infinite/negative tolerances, misspelled keys, an empty or unversioned baseline: one error line."""
    m, b = _baselined(tmp_path)
    data = json.loads(b.read_text())
    edit(data)
    b.write_text(json.dumps(data))  # json writes NaN / Infinity literals, as a hand edit could
    for args in ([], ["--update-baseline"]):
        out = _invoke("--metrics", m, "--baseline", b, *args)
        assert out.exit_code == 2, out.output
        line = out.output.strip()
        assert "\n" not in line and str(b) in line and f"`{key}`" in line, line
    assert json.loads(b.read_text()) == json.loads(json.dumps(data))  # nothing rewritten


def test_an_empty_run_fails_and_cannot_wipe_the_baseline(tmp_path):
    m, b = _baselined(tmp_path)
    before = b.read_bytes()
    m.write_text("{}")
    for args in ([], ["--update-baseline"], ["--update-baseline", "--allow-removed", "1000"]):
        out = _invoke("--metrics", m, "--baseline", b, *args)
        assert out.exit_code == 2 and "has no entries" in out.output
    assert b.read_bytes() == before


def test_update_drops_or_adds_only_what_it_is_told(tmp_path):
    m, b = _baselined(tmp_path)
    before = b.read_bytes()
    fewer = json.loads(json.dumps(METRICS))
    del fewer["few_shot"]["toy_vit"]["zeroshot"]
    m.write_text(json.dumps(fewer))
    out = _invoke("--metrics", m, "--baseline", b, "--update-baseline")
    assert out.exit_code == 2 and "remove 1 entries" in out.output and "--allow-removed 1" in out.output
    assert "| missing | metric | few_shot/toy_vit/zeroshot" in out.output  # the diff is shown first
    assert b.read_bytes() == before
    assert _invoke("--metrics", m, "--baseline", b, "--update-baseline", "--allow-removed", "1").exit_code == 0
    assert "zeroshot" not in b.read_text()
    m.write_text(json.dumps(METRICS))
    out = _invoke("--metrics", m, "--baseline", b, "--update-baseline")
    assert out.exit_code == 2 and "--allow-added 1" in out.output
    assert _invoke("--metrics", m, "--baseline", b, "--update-baseline", "--allow-added", "1").exit_code == 0


def test_converted_toy_baseline_is_valid():
    from pathlib import Path

    baseline = gate.load_baseline(Path(__file__).resolve().parents[1] / "baselines" / "toy.json")
    assert baseline.metrics and baseline.default_tolerance == gate.DEFAULT_TOLERANCE


@pytest.mark.parametrize(
    "name, value, status",
    [
        ("steps", 41, "changed"),  # an integer count: exact
        ("trainable_params", 1056.0000001, "changed"),  # a count that became a float is a change
        ("final_loss", 0.8125 * (1 + 1e-8), "ok"),  # a float: relative tolerance 1e-6
        ("final_loss", 0.8125 * (1 + 1e-4), "changed"),
    ],
)
def test_invariants_are_exact(tmp_path, name, value, status):
    m, b = _baselined(tmp_path)
    key = f"toy_vit/clip_adapter/toy_objects/all_shot16_seed1/{name}"
    (tmp_path / "invariants.json").write_text(json.dumps({**INVARIANTS, key: value}))
    out = _invoke("--metrics", m, "--baseline", b)
    assert out.exit_code == (1 if status == "changed" else 0), out.output
    if status == "changed":
        assert f"| changed | invariant | {key} |" in out.output


def test_a_missing_invariant_fails_and_update_records_invariants(tmp_path):
    m, b = _baselined(tmp_path)
    assert json.loads(b.read_text())["invariants"] == INVARIANTS
    (tmp_path / "invariants.json").write_text(json.dumps(dict(list(INVARIANTS.items())[:2])))
    out = _invoke("--metrics", m, "--baseline", b)
    assert out.exit_code == 1 and "| missing | invariant |" in out.output


def test_training_invariants_one_entry_per_training_cell_and_diagnostic():
    row = {"backbone": "toy_vit", "method": "coop", "source": "toy_objects", "train_subset": "base", "shots": 4}
    diag = json.dumps({"steps": 12, "final_loss": 0.5, "amp": False, "bad": float("nan"), "note": "x"})
    frame = pd.DataFrame([{**row, "seed": 1, "subset": s, "diagnostics": diag} for s in ("base", "new")])
    assert training_invariants(frame) == {
        "toy_vit/coop/toy_objects/base_shot4_seed1/amp": 0,
        "toy_vit/coop/toy_objects/base_shot4_seed1/final_loss": 0.5,
        "toy_vit/coop/toy_objects/base_shot4_seed1/steps": 12,
    }


def test_evaluation_invariants_once_per_evaluation_cell():
    row = {"backbone": "toy_vit", "method": "coop", "source": "toy_objects", "train_subset": "base", "shots": 4}
    cell = {**row, "seed": 1, "dataset": "toy_objects", "n": 375}
    frame = pd.DataFrame(
        [
            {**cell, "protocol": "base2new", "subset": "new", "value": 100 * 124 / 375, "status": "ok"},
            {**cell, "protocol": "other", "subset": "new", "value": 100 * 124 / 375, "status": "ok"},  # shared cell
            {**cell, "protocol": "base2new", "subset": "base", "value": float("nan"), "status": "n/a"},
        ]
    )
    name = "toy_vit/coop/toy_objects/base_shot4_seed1/eval/toy_objects/new"
    assert evaluation_invariants(frame) == {f"{name}/accuracy": 100 * 124 / 375, f"{name}/n": 375}


def test_a_miscounted_denominator_fails_the_gate_where_the_tolerance_does_not():
    """Accuracy over n + 1 moves a 375-image cell by 0.09 points (inside the tolerance) but changes its count."""
    cell = {"backbone": "toy_vit", "method": "coop", "source": "toy_objects", "train_subset": "all", "shots": 4}
    cell |= {"seed": 1, "dataset": "toy_objects", "subset": "all", "status": "ok"}
    ok = evaluation_invariants(pd.DataFrame([{**cell, "n": 375, "value": 100 * 124 / 375}]))
    buggy = evaluation_invariants(pd.DataFrame([{**cell, "n": 375, "value": 100 * 124 / 376}]))
    assert abs(100 * 124 / 375 - 100 * 124 / 376) < gate.DEFAULT_TOLERANCE
    findings = gate.compare_invariants(buggy, gate.Baseline(metrics={}, invariants=ok))
    assert [(f.status, f.metric.rsplit("/", 1)[1]) for f in findings] == [("changed", "accuracy"), ("ok", "n")]


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
    shutil.rmtree(shared_store(layout.root, "evaluate"))  # evaluated again, not restored
    evaluate.run(backbone="toy_vit", method="zeroshot", cfg=cfg, layout=layout)
    aggregate.run(cfg=cfg, layout=layout)
    out = _invoke("--metrics", metrics, "--baseline", baseline)
    assert out.exit_code == 1
    assert "| regression | " in out.output and "/zeroshot/" in out.output
    invariants = json.loads((layout.reports() / "invariants.json").read_text())
    trained = {n.split("/")[1] for n, v in invariants.items() if n.endswith("/steps") and v > 0}
    assert trained == set(cfg.methods) - {"zeroshot"}


@pytest.fixture
def fresh(project):
    from test_pipeline import run_all

    cfg, layout, data_root = project
    run_all(cfg, layout, data_root)
    return cfg, layout, data_root
