"""The test-label firewall: no training or selection path can reach test images or labels.

Four independent checks: (1) poisoning every test artifact (test features and labels, the test records of the
dataset index) and deleting the test feature caches leaves every trained state and every selection diagnostic
byte-identical, and training opens no file under a test feature cache; (2) the FitTask of every cell holds only
few-shot train/val images; (3) the train-stage and method sources never name the test layout; (4) the DVC train
stage declares no test path as a dependency.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clipbench import io as cb_io
from clipbench.cells import shared_store
from clipbench.config import SuiteConfig
from clipbench.data.base import DatasetSplits, Record
from clipbench.data.index import DatasetIndex, load_index
from clipbench.data.kshot import manifest_name, read_manifest
from clipbench.features import read_feature_dir, write_feature_dir
from clipbench.methods import METHODS
from clipbench.pipeline import download, extract, split, train
from clipbench.protocols import training_cells, training_units
from clipbench.suites import smoke_params
from clipbench.typed import parse
from clipbench.views import unit_need

from conftest import make_project, tiny_params

ROOT = Path(__file__).resolve().parents[1]
# Every method at its tiny-run settings (Method.smoke); every validation-based selection switched on.
SELECTION_ON = {"clip_adapter": {"select_alpha": True}, "tip_adapter_f": {"select_epoch_on_val": True}}

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, Path)):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)


def _runnable_methods(cfg: SuiteConfig, layout) -> list[str]:
    """Registered methods whose tasks the train stage can build on this branch (backbone methods need the
    backbone in the FitTask; they join this test as soon as the stage passes it)."""
    dataset = cfg.datasets[0]
    inputs = train.load_inputs("toy_vit", dataset, cfg, layout)
    cell = training_cells(cfg, dataset)[0]
    task = train.build_task(cell, read_manifest(layout.splits(dataset) / manifest_name(cell.shots, cell.seed)), inputs)
    return [m for m in METHODS.names() if not METHODS.get(m).needs_backbone() or task.backbone is not None]


def _prepare(tmp_path: Path) -> tuple[SuiteConfig, object]:
    _, layout, data_root = make_project(tmp_path)
    params = tiny_params(
        data_root=str(data_root), methods=METHODS.names(), method_params=smoke_params(METHODS.names(), SELECTION_ON)
    )
    cfg = parse(SuiteConfig, params, "firewall params")
    for d in cfg.datasets:
        download.run(dataset=d, data_root=data_root, layout=layout)
        split.run(dataset=d, cfg=cfg, layout=layout)
        extract.run(backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root)
    return cfg, layout


def _train_all(cfg, layout, methods: list[str]) -> dict[str, bytes | dict]:
    """Train every cell of every method from scratch; return state bytes and diagnostics per cell."""
    out: dict[str, bytes | dict] = {}
    for m in methods:
        for d in cfg.datasets:
            shutil.rmtree(layout.models("toy_vit", m, d), ignore_errors=True)
            shutil.rmtree(shared_store(layout.root, "train"), ignore_errors=True)  # computed, never restored
            train.run(backbone="toy_vit", method=m, dataset=d, cfg=cfg, layout=layout)
            for cell_json in sorted(layout.models("toy_vit", m, d).glob("*/cell.json")):
                name = f"{m}/{d}/{cell_json.parent.name}"
                out[name + "/state"] = (cell_json.parent / train.STATE_FILE).read_bytes()
                out[name + "/diagnostics"] = json.loads(cell_json.read_text())["diagnostics"]
    return out


def _poison_test_data(cfg, layout) -> None:
    """Scramble every test artifact: random test features, permuted test labels, permuted index test labels."""
    g = torch.Generator().manual_seed(123)
    for d in cfg.datasets:
        test_dir = layout.test_features("toy_vit", d)
        cache = read_feature_dir(test_dir)
        tensors = {
            "features": torch.randn(cache.tensors["features"].shape, generator=g),
            "labels": cache.tensors["labels"][torch.randperm(len(cache.tensors["labels"]), generator=g)],
        }
        write_feature_dir(test_dir, tensors, cache.index, cache.meta)
        index = load_index(layout.dataset_index(d))
        s = index.splits
        labels = [r.label for r in s.test][::-1]
        test = tuple(Record(r.path, lbl, s.classnames[lbl]) for r, lbl in zip(s.test, labels, strict=True))
        DatasetIndex(
            index.dataset, index.image_root, DatasetSplits(s.train, s.val, test, s.class_ids, s.classnames)
        ).write(layout.dataset_index(d))


def test_poisoned_or_deleted_test_data_changes_no_trained_state_or_selection(tmp_path, small_toy, monkeypatch):
    global _opened
    cfg, layout = _prepare(tmp_path)
    methods = _runnable_methods(cfg, layout)
    assert {"linear_probe", "clip_adapter", "tip_adapter", "tip_adapter_f"} <= set(methods)
    clean = _train_all(cfg, layout, methods)
    assert clean and all(v is not None for v in clean.values())

    _poison_test_data(cfg, layout)
    assert _train_all(cfg, layout, methods) == clean

    read_tensors: list[str] = []
    original = cb_io.safe_open  # the one place clipbench reads tensors (clipbench.io.load_tensors_with_metadata)
    monkeypatch.setattr(
        cb_io, "safe_open", lambda path, *a, **k: read_tensors.append(str(path)) or original(path, *a, **k)
    )
    for d in cfg.datasets:
        shutil.rmtree(layout.test_features("toy_vit", d))
    _opened = []
    try:
        assert _train_all(cfg, layout, methods) == clean
        seen = list(_opened) + read_tensors
    finally:
        _opened = None
    test_root = {str(layout.test_features("toy_vit", d)) for d in cfg.datasets}
    assert read_tensors, "the audit saw no tensor reads; the check would be vacuous"
    assert not [p for p in seen if any(p.startswith(t) for t in test_root)]


def test_fit_tasks_hold_only_few_shot_train_and_val_images(project):
    cfg, layout, data_root = project
    for d in cfg.datasets:
        download.run(dataset=d, data_root=data_root, layout=layout)
        split.run(dataset=d, cfg=cfg, layout=layout)
        extract.run(backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root)
    for d in cfg.datasets:
        test_paths = {r.path for r in load_index(layout.dataset_index(d)).splits.test}
        fit = read_feature_dir(layout.fit_features("toy_vit", d))
        assert not test_paths & set(fit.index["train"]) and not test_paths & set(fit.index["val"])
        inputs = train.load_inputs("toy_vit", d, cfg, layout)
        assert {u.cell for u in training_units(cfg, "clip_adapter", d)} == set(training_cells(cfg, d))
        for unit in training_units(cfg, "clip_adapter", d):  # a method that reads augmented views
            cell, need = unit.cell, unit_need(cfg, "clip_adapter", unit)
            manifest = read_manifest(layout.splits(d) / manifest_name(cell.shots, cell.seed))
            assert not test_paths & {r.path for r in manifest.train + manifest.val}
            task = train.build_task(cell, manifest, inputs, need)
            n_train = len([r for r in manifest.train if r.label in train.cell_labels(cell, manifest)])
            assert len(task.train) == n_train and task.train.views.shape[:2] == (need.count, n_train)
            assert len(task.val) <= len(manifest.val)


def _names_in(path: Path) -> tuple[set[str], set[str]]:
    """Attribute/function names and non-docstring string constants of a module."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    strings = {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    }
    return names, strings


def test_train_stage_and_methods_never_name_the_test_layout():
    sources = [
        ROOT / "clipbench" / "pipeline" / "train.py",
        ROOT / "stages" / "train.py",
        *sorted((ROOT / "clipbench" / "methods").glob("*.py")),
    ]
    for path in sources:
        names, strings = _names_in(path)
        assert not names & {"test_features", "test", "eval_cells"}, f"{path.name} names a test accessor"
        bad = [s for s in strings if s == "test" or "/test" in s or s.startswith("test_")]
        assert not bad, f"{path.name} uses test path strings {bad}"


def test_dvc_train_stage_declares_no_test_dependency():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    deps = [str(d) for d in stage["deps"]]
    assert deps and not [d for d in deps if "test" in Path(d).parts or d.endswith("/test")]
    assert any("/fit" in d for d in deps)  # the few-shot feature cache is what it reads instead


@pytest.mark.parametrize("name", METHODS.names())
def test_fit_signature_takes_only_a_fit_task(name):
    import inspect

    params = list(inspect.signature(METHODS.get(name).fit).parameters)
    assert params == ["self", "task"], f"{name}.fit takes extra inputs {params}"
