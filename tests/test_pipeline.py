"""Every stage function on a miniature suite in a temporary directory, plus incremental re-runs."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pandas as pd
import pytest
import torch

from clipbench import tracking
from clipbench.cells import CellStore, shared_store
from clipbench.config import SuiteConfig
from clipbench.executors import EXECUTORS
from clipbench.layout import Layout
from clipbench.methods import METHODS
from clipbench.pipeline import aggregate, backbone, download, evaluate, extract, split, track, train
from clipbench.protocols import eval_cells
from clipbench.results import RESULT_FILE
from clipbench.suites import smoke_params
from clipbench.typed import parse
from clipbench.views import view_groups

from conftest import make_project, tiny_params


def run_all(cfg, layout, data_root, skip_backbone=True):
    if not skip_backbone:
        backbone.run(backbone="toy_vit", pretrain_config=cfg.toy_pretrain, layout=layout)
    for d in cfg.all_datasets():
        download.run(dataset=d, data_root=data_root, layout=layout)
    for d in cfg.datasets:
        split.run(dataset=d, cfg=cfg, layout=layout)
    counts = {}
    for d in cfg.datasets:
        counts[d] = extract.run(backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root)
    for d in cfg.targets:
        extract.run(backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root, test_only=True)
    trained = {
        (m, d): train.run(backbone="toy_vit", method=m, dataset=d, cfg=cfg, layout=layout)
        for m in cfg.methods
        for d in cfg.datasets
    }
    for m in cfg.methods:
        evaluate.run(backbone="toy_vit", method=m, cfg=cfg, layout=layout)
    aggregate.run(cfg=cfg, layout=layout)
    return counts, trained


@pytest.fixture(scope="module")
def ran(tmp_path_factory, small_toy_module):
    """One miniature run shared by the read-only tests below."""
    cfg, layout, data_root = make_project(tmp_path_factory.mktemp("shared"))
    counts, trained = run_all(cfg, layout, data_root)
    return cfg, layout, data_root, counts, trained


@pytest.fixture
def fresh(project):
    """A private run for tests that change the project."""
    cfg, layout, data_root = project
    counts, trained = run_all(cfg, layout, data_root)
    return cfg, layout, data_root, counts, trained


def test_end_to_end_writes_all_tables(ran):
    cfg, layout, _, counts, _ = ran
    results = pd.read_parquet(layout.reports() / "results.parquet")
    assert len(results) == len(eval_cells(cfg)) * len(cfg.methods)
    for protocol in ("few_shot", "base2new", "cross_dataset", "domain_generalization"):
        assert (layout.tables() / f"{protocol}.md").read_text().count("|") > 10
        assert set(results[results.protocol == protocol].method) == set(cfg.methods)
    ok = results[results.status == "ok"]
    assert ok.value.between(0, 100).all()
    metrics = json.loads((layout.reports() / "metrics.json").read_text())
    assert set(metrics) == {"few_shot", "base2new", "cross_dataset", "domain_generalization"}


def test_class_specific_method_is_na_where_undefined(ran):
    _, layout, *_ = ran
    r = pd.read_parquet(layout.reports() / "results.parquet")
    lp = r[r.method == "linear_probe"]
    assert (lp[lp.metric == "new"].status == "n/a").all()
    xd = lp[(lp.protocol == "cross_dataset") & (lp.dataset != lp.source)]
    assert (xd.status == "n/a").all() and xd.value.isna().all()
    dg = lp[lp.protocol == "domain_generalization"]
    assert (dg.status == "ok").all()  # same class ids: restricted by id, not name
    table = (layout.tables() / "base2new.md").read_text()
    assert "n/a" in table


def test_each_image_encoded_once_per_view(ran):
    cfg, layout, data_root, counts, _ = ran
    from clipbench.data.index import load_index
    from clipbench.features import read_feature_dir

    for d, c in counts.items():
        fit = read_feature_dir(layout.fit_features("toy_vit", d))
        n_train, n_val = len(fit.index["train"]), len(fit.index["val"])
        n_test = len(load_index(layout.dataset_index(d)).splits.test)
        groups = [v for k, v in fit.index.items() if k.startswith("views/")]
        assert groups, "the suite's methods read augmented views"
        viewed, pairs = sum(len(g["paths"]) for g in groups), sum(sum(g["counts"]) for g in groups)
        assert c["decoded"] == n_train + n_val + n_test + viewed  # each group decodes its images once
        assert c["encoded"] == n_train + pairs + n_val + n_test
        assert fit.meta["encode_counts"] == {"decoded": n_train + n_val + viewed, "encoded": n_train + pairs + n_val}
        test = read_feature_dir(layout.test_features("toy_vit", d))
        assert test.meta["encode_counts"] == {"decoded": n_test, "encoded": n_test}


def test_rerun_recomputes_nothing_and_new_seed_only_new_cells(fresh):
    cfg, layout, data_root, _, trained = fresh
    assert all(t["trained"] == t["planned"] for t in trained.values())
    again = {
        (m, d): train.run(backbone="toy_vit", method=m, dataset=d, cfg=cfg, layout=layout)
        for m in cfg.methods
        for d in cfg.datasets
    }
    assert all(t["trained"] == 0 for t in again.values())
    before = pd.read_parquet(layout.results("toy_vit", "clip_adapter") / RESULT_FILE)
    params = tiny_params(data_root=str(data_root))
    params["protocols"]["few_shot"]["seeds"] = [1, 2, 3]
    cfg3 = parse(SuiteConfig, params, "test")
    split.run(dataset="toy_objects", cfg=cfg3, layout=layout)
    extract.run(backbone="toy_vit", dataset="toy_objects", cfg=cfg3, layout=layout, data_root=data_root)
    out = train.run(backbone="toy_vit", method="clip_adapter", dataset="toy_objects", cfg=cfg3, layout=layout)
    assert out["trained"] == len(cfg3.protocols["few_shot"].shots)  # only the seed-3 cells
    evaluate.run(backbone="toy_vit", method="clip_adapter", cfg=cfg3, layout=layout)
    after = pd.read_parquet(layout.results("toy_vit", "clip_adapter") / RESULT_FILE)
    merged = before.merge(after, on=["protocol", "source", "shots", "seed", "dataset", "subset"])
    assert len(merged) == len(before)
    assert (merged.value_x.fillna(-1) == merged.value_y.fillna(-1)).all()
    assert (merged.eval_key_x == merged.eval_key_y).all()


def test_changing_one_methods_param_retrains_only_it(fresh):
    cfg, layout, data_root, _, _ = fresh
    params = tiny_params(data_root=str(data_root))
    params["method_params"]["clip_adapter"]["alpha"] = 0.5
    cfg2 = parse(SuiteConfig, params, "test")
    out = {
        m: train.run(backbone="toy_vit", method=m, dataset="toy_objects", cfg=cfg2, layout=layout) for m in cfg2.methods
    }
    assert out["clip_adapter"]["trained"] == out["clip_adapter"]["planned"] > 0
    assert out["zeroshot"]["trained"] == out["linear_probe"]["trained"] == 0


def test_tracking_logs_one_run_per_cell_and_is_idempotent(ran, tmp_path, mlflow_uri):
    cfg, layout, *_ = ran
    uri = mlflow_uri
    cfg_t = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=True, uri=uri))
    summary = track.run(cfg=cfg_t, layout=layout)
    results = pd.read_parquet(layout.reports() / "results.parquet")
    runs = results.groupby(["protocol", "method", "backbone", "source", "dataset", "shots", "seed"]).ngroups
    assert summary["status"] == "ok" and summary["created"] == runs
    assert track.run(cfg=cfg_t, layout=layout)["created"] == 0
    found = tracking.search_runs(uri, "clipbench/base2new")
    assert {"tags.method", "tags.split_hash", "tags.config_hash", "tags.git_commit"} <= set(found.columns)
    assert {"metrics.base", "metrics.new"} <= set(found.columns)


def test_unreachable_tracking_store_warns_and_keeps_results(ran, tmp_path):
    cfg, layout, *_ = ran
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    bad = dataclasses.replace(
        cfg, tracking=dataclasses.replace(cfg.tracking, enabled=True, uri=f"sqlite:///{blocker}/sub/mlflow.db")
    )
    with pytest.warns(UserWarning, match="MLflow tracking"):
        summary = track.run(cfg=bad, layout=layout)
    assert summary["status"] == "unavailable"
    assert (layout.reports() / "results.parquet").is_file()


def test_backbone_stage_pretrains_and_loads(project):
    cfg, layout, _ = project
    backbone.run(backbone="toy_vit", pretrain_config=cfg.toy_pretrain, layout=layout)
    from clipbench.backbones import load_backbone

    bb = load_backbone("toy_vit", layout.backbone("toy_vit"))
    manifest = json.loads((layout.backbone("toy_vit") / "backbone.json").read_text())
    assert manifest["sha256"] == bb.sha256 and not math.isnan(manifest["final_loss"])


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_runs_through_train_and_evaluate(ran, name, tmp_path):
    """The train and evaluate stages feed each method what it declares (features, pre-projection features,
    images, backbone) in every protocol; class-agnostic methods answer everywhere, class-specific ones give n/a."""
    _, shared, data_root, *_ = ran
    params = tiny_params(data_root=str(data_root), methods=[name])
    params["method_params"] = smoke_params([name])
    cfg = parse(SuiteConfig, params, "test")
    layout = shared
    if any(view_groups(cfg, d) for d in cfg.datasets):  # its own view recipe: extracted in a copy of the shared run
        layout = Layout(tmp_path / "copy")
        shutil.copytree(shared.root, layout.root)
        for d in cfg.datasets:
            extract.run(backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root)
    for d in cfg.datasets:
        out = train.run(backbone="toy_vit", method=name, dataset=d, cfg=cfg, layout=layout)
        assert out["planned"] > 0
    results = pd.read_parquet(evaluate.run(backbone="toy_vit", method=name, cfg=cfg, layout=layout))
    assert len(results) == len(eval_cells(cfg))
    assert set(results.status) <= {"ok", "n/a"}
    ok = results[results.status == "ok"]
    assert ok.value.between(0, 100).all() and len(ok) > 0
    if not METHODS.get(name).class_specific:
        assert (results.status == "ok").all(), results[results.status != "ok"][["protocol", "dataset", "note"]]


def test_feature_methods_train_and_evaluate_without_open_clip(ran, tmp_path):
    """A fresh stage process for a features-only method never imports open_clip or torchvision."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    _, layout, data_root, _, _ = ran
    root = tmp_path / "copy"
    shutil.copytree(layout.root, root)
    tests = Path(__file__).parent
    probe = "\n".join(
        [
            "import sys",
            "from pathlib import Path",
            f"sys.path.insert(0, {str(tests)!r})",
            "from conftest import tiny_params",
            "from clipbench.config import SuiteConfig",
            "from clipbench.layout import Layout",
            "from clipbench.pipeline import evaluate, train",
            "from clipbench.typed import parse",
            f"cfg = parse(SuiteConfig, tiny_params(data_root={str(root / data_root.relative_to(layout.root))!r}), 'p')",
            f"layout = Layout(Path({str(root)!r}))",
            "train.run(backbone='toy_vit', method='zeroshot', dataset='toy_objects', cfg=cfg, layout=layout)",
            "evaluate.run(backbone='toy_vit', method='zeroshot', cfg=cfg, layout=layout)",
            "print([m for m in ('open_clip', 'torchvision') if m in sys.modules])",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tests.parent)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _states(layout, method: str, dataset: str) -> dict[str, tuple[bytes, dict]]:
    root = layout.models("toy_vit", method, dataset)
    out = {}
    for cell in sorted(p for p in root.iterdir() if p.is_dir()):
        record = json.loads((cell / "cell.json").read_text())
        out[cell.name] = ((cell / train.STATE_FILE).read_bytes(), record["diagnostics"], record["key"])
    return out


@pytest.mark.parametrize("executor", [n for n in EXECUTORS.names() if n != "serial"])
def test_every_executor_trains_the_same_bytes_as_serial(fresh, executor):
    """Cells are seeded from their own identity: order and process do not change a single byte."""
    _, layout, data_root, *_ = fresh
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # what runtime.cpu_threads: 1 does in a stage process
    try:
        results = {}
        for name in ("serial", executor):
            params = tiny_params(data_root=str(data_root), runtime={"executor": name, "cpu_threads": 1})
            cfg = parse(SuiteConfig, params, "test")
            for method in ("linear_probe", "clip_adapter"):
                store = layout.models("toy_vit", method, "toy_objects")
                CellStore(store).prune(set())  # train every cell afresh (not restored from the shared store)
                shutil.rmtree(shared_store(layout.root, "train"), ignore_errors=True)
                out = train.run(backbone="toy_vit", method=method, dataset="toy_objects", cfg=cfg, layout=layout)
                assert out["trained"] == out["planned"] > 1
                results[name, method] = _states(layout, method, "toy_objects")
        for method in ("linear_probe", "clip_adapter"):
            assert results[executor, method] == results["serial", method]
    finally:
        torch.set_num_threads(previous)
