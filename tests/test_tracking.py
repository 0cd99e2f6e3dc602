"""MLflow layout: a parent per (method, backbone, protocol) with a child per cell, comparable metric names,
lineage tags, artifacts, and idempotent re-logging."""

from __future__ import annotations

import json

import pandas as pd
from mlflow.tracking import MlflowClient

from clipbench import tracking
from clipbench.pipeline import aggregate
from clipbench.pipeline.track import report_artifacts, report_entries

from test_report import make_results

LINEAGE = {"git_commit": "abc123", "suite": "test", "version.mlflow": "x"}


def _log(results, tmp_path, uri):
    reports = tmp_path / "reports"
    aggregate.write_tables(results, None, reports, suite="test", template_set="custom")
    return tracking.log_results(
        results,
        uri=uri,
        experiment_prefix="cb",
        configs={("base2new", "clip_adapter"): {"alpha": 0.2}, ("few_shot", "clip_adapter"): {"alpha": 0.5}},
        lineage=LINEAGE,
        entries=report_entries(reports),
        artifacts=report_artifacts(reports),
    )


def _runs(client, name):
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=5000)


def test_parents_group_children_with_comparable_metrics_and_lineage(tmp_path, mlflow_uri):
    uri = mlflow_uri
    results = make_results(shots=(1, 16), seeds=(1, 2))
    summary = _log(results, tmp_path, uri)
    cells = results.groupby(tracking.CELL_KEYS).ngroups
    assert summary["status"] == "ok" and summary["created"] == cells and summary["parents_created"] == 8
    client = MlflowClient(tracking_uri=uri)
    runs = _runs(client, "cb/base2new")
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("clipbench.role") == "parent"}
    children = [r for r in runs if r.data.tags.get("clipbench.role") == "cell"]
    assert {p.data.tags["method"] for p in parents.values()} == {"zeroshot", "clip_adapter"}
    assert len(children) == 2 * 3 * 2  # methods x datasets x seeds
    for child in children:
        parent = parents[child.data.tags["mlflow.parentRunId"]]
        assert parent.data.tags["method"] == child.data.tags["method"]
        assert {"base", "new"} == set(child.data.metrics)
        assert child.data.tags["git_commit"] == "abc123" and child.data.tags["split_hash"].startswith("split-")
        assert child.data.tags["dvc_stage"] == f"evaluate@toy_vit-{child.data.tags['method']}"
    names = [set(p.data.metrics) for p in parents.values()]
    assert names[0] == names[1] and {"average/base", "average/new", "average/H", "toy_objects/H"} <= names[0]
    entries = pd.read_csv(tmp_path / "reports" / "tables" / "base2new.csv")
    want = entries[(entries.method == "zeroshot") & (entries.column == "average") & (entries.metric == "H")]
    zs = next(p for p in parents.values() if p.data.tags["method"] == "zeroshot")
    assert zs.data.metrics["average/H"] == want["mean"].iloc[0]
    assert {"version.mlflow", "config_hash", "split_hashes", "feature_keys"} <= set(zs.data.tags)
    artifacts = {a.path for a in client.list_artifacts(zs.info.run_id, "plots")}
    assert artifacts == {"plots/base_new_toy_vit.png"}
    assert {a.path for a in client.list_artifacts(zs.info.run_id, "tables")} >= {"tables/base2new.md"}
    assert set(zs.data.params) == {"method", "backbone", "protocol"}
    ca = next(p for p in parents.values() if p.data.tags["method"] == "clip_adapter")
    config = client.download_artifacts(ca.info.run_id, "config.json", str(tmp_path))
    assert json.loads(open(config).read())["config"] == {"alpha": 0.2}
    few = [r for r in _runs(client, "cb/few_shot") if r.data.tags.get("clipbench.role") == "parent"]
    few_ca = next(p for p in few if p.data.tags["method"] == "clip_adapter")  # its protocol's config
    config = client.download_artifacts(few_ca.info.run_id, "config.json", str(tmp_path / "few"))
    assert json.loads(open(config).read())["config"] == {"alpha": 0.5}
    assert all({"average/acc_1shot", "average/acc_16shot", "toy_scenes/acc_16shot"} <= set(p.data.metrics) for p in few)


def test_relogging_is_idempotent_and_a_new_seed_adds_only_its_cells(tmp_path, mlflow_uri):
    uri = mlflow_uri
    two = make_results(shots=(16,), seeds=(1, 2))
    _log(two, tmp_path, uri)
    again = _log(two, tmp_path, uri)
    assert again["created"] == 0 and again["parents_unchanged"] == 8 and again["parents_created"] == 0
    three = make_results(shots=(16,), seeds=(1, 2, 3))
    three = pd.concat([two, three[three.seed == 3]], ignore_index=True)
    more = _log(three, tmp_path, uri)
    assert more["created"] == three[three.seed == 3].groupby(tracking.CELL_KEYS).ngroups
    assert more["parents_updated"] == 8 and more["parents_created"] == 0
    client = MlflowClient(tracking_uri=uri)
    parents = [r for r in _runs(client, "cb/few_shot") if r.data.tags.get("clipbench.role") == "parent"]
    assert len(parents) == 2 and all(p.data.tags["results.ok"] == "9" for p in parents)


def test_a_new_method_config_gets_a_new_current_parent(tmp_path, mlflow_uri):
    uri = mlflow_uri
    results = make_results(methods=("zeroshot",), shots=(16,), seeds=(1,))
    _log(results, tmp_path, uri)
    changed = results.assign(config_hash="cfg-new", eval_key=results.eval_key + "-v2")
    _log(changed, tmp_path, uri)
    client = MlflowClient(tracking_uri=uri)
    parents = [r for r in _runs(client, "cb/few_shot") if r.data.tags.get("clipbench.role") == "parent"]
    current = {p.data.tags["config_hash"]: p.data.tags["clipbench.current"] for p in parents}
    assert current == {"cfg-zeroshot": "false", "cfg-new": "true"}


def test_cells_logged_before_parents_existed_are_attached_to_their_parent(tmp_path, mlflow_uri):
    uri = mlflow_uri
    results = make_results(methods=("zeroshot",), shots=(16,), seeds=(1,))
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cb/domain_generalization")
    cell = results[(results.protocol == "domain_generalization") & (results.dataset == "toy_objects")]
    orphan = client.create_run(exp, tags={tracking.KEY_TAG: "-".join(sorted(cell.eval_key))}).info.run_id
    summary = _log(results, tmp_path, uri)
    assert summary["already_logged"] == 1
    parent = client.get_run(orphan).data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).data.tags["clipbench.role"] == "parent"
