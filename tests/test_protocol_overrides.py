"""Per-protocol method settings: ``method_params.<method>.<protocol>`` parsed and checked at load, resolved in one
order, and trained once per distinct resolved config (each protocol's evaluations score its own model)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml

from clipbench import plan
from clipbench.cells import TrainUnit
from clipbench.config import SuiteConfig, load_suite
from clipbench.errors import ConfigError
from clipbench.invariants import run_invariants
from clipbench.layout import Layout
from clipbench.pipeline import download, evaluate, extract, split, train
from clipbench.protocols import eval_units, protocol_configs, training_cells, training_units
from clipbench.results import RESULT_FILE
from clipbench.suites import smoke_params
from clipbench.typed import parse, stable_hash

from conftest import make_project, tiny_params

METHODS = ["zeroshot", "coop", "clipfit"]
PHOTO = {"ctx_init": "a photo of a"}


def suite(drop: tuple[str, ...] = (), **method_params) -> SuiteConfig:
    """The tiny toy suite (few-shot on toy_objects, the transfer source) with ``method_params`` for ``METHODS``."""
    params = tiny_params(
        methods=[*METHODS, *(m for m in method_params if m not in METHODS)], method_params=method_params
    )
    for name in drop:
        params["protocols"].pop(name)
    return parse(SuiteConfig, params, "params.yaml")


def test_a_protocol_override_applies_to_its_protocol_only():
    cfg = suite(coop={"n_ctx": 8, "base2new": PHOTO})
    assert cfg.method_config("coop", "base2new").ctx_init == "a photo of a"
    assert cfg.method_config("coop", "base2new").n_ctx == 8  # the plain fields stay under the override
    for protocol in (None, "few_shot", "cross_dataset"):
        assert cfg.method_config("coop", protocol) == cfg.method_config("coop")
    assert cfg.overridden("coop") == ("base2new",) and cfg.overridden("clipfit") == ()
    assert cfg.method_config_hash("coop", "base2new") != cfg.method_config_hash("coop")


@pytest.mark.parametrize(
    "method_params,drop,needle",
    [
        ({"coop": {"base2new": {"n_ctxx": 4}}}, (), "params.yaml: method_params.coop.base2new.n_ctxx: unknown key"),
        ({"coop": {"base_to_new": PHOTO}}, (), "method_params.coop.base_to_new: unknown key for CoOpConfig"),
        ({"coop": {"base2new": {"few_shot": PHOTO}}}, (), "method_params.coop.base2new.few_shot: protocol overrides"),
        ({"coop": {"base2new": {"n_ctx": "four"}}}, (), "method_params.coop.base2new.n_ctx: expected int"),
        ({"coop": {"base2new": 4}}, (), "method_params.coop.base2new: expected a mapping of CoOpConfig fields"),
        ({"coop": {"domain_generalization": PHOTO}}, ("domain_generalization",), "is not enabled in protocols"),
        (
            {"clipfit": {"few_shot": {"by_dataset": {"toy_objects": {"lam": 1.0}}}}},
            (),
            "method_params.clipfit.few_shot.by_dataset: per-dataset settings cannot be set per protocol",
        ),
        (
            {"tip_adapter": {"augment_views": 2, "few_shot": {"crop_scale": [0.9, 0.1]}}},
            (),
            "method_params.tip_adapter.few_shot.crop_scale: need 0 < low <= high <= 1",
        ),
    ],
)
def test_a_wrong_override_fails_at_load_naming_its_key(method_params, drop, needle):
    with pytest.raises(ConfigError) as err:
        suite(drop, **method_params)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_error_of_a_loaded_file_starts_with_the_key_path(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(methods=METHODS, method_params={"coop": {"base2new": {"n_ctxx": 4}}})))
    with pytest.raises(ConfigError, match=r"^params\.yaml: method_params\.coop\.base2new\.n_ctxx: unknown key"):
        load_suite(path)


def test_resolution_order_defaults_plain_protocol_then_by_dataset():
    by_dataset = {"toy_objects": {"epochs": 7}}
    cfg = suite(clipfit={"epochs": 3, "lr": 0.02, "by_dataset": by_dataset, "few_shot": {"epochs": 5, "lam": 4.0}})
    base, own = protocol_configs(cfg, "clipfit", "toy_textures")
    few = own["few_shot"]
    assert (base.epochs, few.epochs, few.lam, few.lr, few.momentum) == (3, 5, 4.0, 0.02, 0.9)
    base, own = protocol_configs(cfg, "clipfit", "toy_objects")
    assert (base.epochs, own["few_shot"].epochs, own["few_shot"].lam) == (7, 7, 4.0)  # by_dataset innermost


def test_an_override_equal_to_the_base_config_changes_no_cell_and_no_key(monkeypatch, tmp_path):
    plain, same = suite(), suite(coop={"few_shot": {"n_ctx": 16}, "base2new": {"ctx_init": None}})
    for dataset in plain.datasets:
        units = training_units(same, "coop", dataset)
        assert units == [TrainUnit(c) for c in training_cells(plain, dataset)]
        assert {u.name for u in units} == {c.name for c in training_cells(plain, dataset)}
    assert stub_keys(plain, monkeypatch, tmp_path) == stub_keys(same, monkeypatch, tmp_path)


def stub_keys(cfg: SuiteConfig, monkeypatch, tmp_path) -> dict[str, str]:
    """Every coop train key of ``cfg`` with stand-ins for the stage inputs (features, splits, checkpoint)."""
    fake = SimpleNamespace(fit=SimpleNamespace(meta={"feature_key": "f"}), text=torch.zeros(2))
    monkeypatch.setattr(train.TrainJob, "features", lambda self, template_set=None: fake)
    monkeypatch.setattr(train.TrainJob, "split", lambda self, cell: SimpleNamespace(hash=f"{cell.shots}-{cell.seed}"))
    monkeypatch.setattr(train, "verify_checkpoint", lambda spec, path: "sha")
    layout = Layout(tmp_path)
    keys = {}
    for dataset in cfg.datasets:
        job = train.TrainJob("toy_vit", "coop", dataset, cfg, layout)
        keys |= {f"{dataset}/{u.name}": job.key(u) for u in training_units(cfg, "coop", dataset)}
    return keys


def test_protocols_resolving_alike_share_one_model_per_cell():
    cfg = suite(coop={"cross_dataset": PHOTO, "domain_generalization": PHOTO})
    units = eval_units(cfg, "coop")
    source = cfg.protocols["cross_dataset"].source
    shared = {c.train for c in units if c.protocol == "few_shot"} & {c.train for c in units if c.protocol != "few_shot"}
    assert shared  # the source's largest-shot cell serves few-shot and both transfer protocols
    for cell, unit in units.items():
        transfer = cell.protocol in ("cross_dataset", "domain_generalization")
        assert unit.variant == ("cross_dataset" if transfer else "")
        assert unit.config.ctx_init == ("a photo of a" if transfer else None)
    trained = training_units(cfg, "coop", source)
    assert len(trained) == len(training_cells(cfg, source)) + len(shared)  # one extra model per shared cell
    assert {u.name for u in trained if u.variant} == {f"{c.name}-cross_dataset" for c in shared}


def test_a_by_dataset_entry_that_undoes_an_override_shares_the_cell():
    """Configs are compared resolved for the cell's dataset: where by_dataset sets the overridden field back, the
    protocol trains on the shared cell."""
    table = {"toy_objects": {"lambda_few_shot": 2.0}}
    cfg = suite(clipfit={"by_dataset": table, "few_shot": {"lambda_few_shot": 8.0}})
    assert {u.variant for u in training_units(cfg, "clipfit", "toy_objects")} == {""}
    cfg = suite(clipfit={"few_shot": {"lambda_few_shot": 8.0}})
    assert {u.variant for u in training_units(cfg, "clipfit", "toy_objects")} == {"", "few_shot"}


def test_plan_counts_one_trained_cell_per_unit():
    plain, override = suite(), suite(coop={"cross_dataset": PHOTO})
    rows = {"plain": plan.suite_plan(plain).methods, "override": plan.suite_plan(override).methods}
    before, after = ({r.method: r.train_cells for r in rows[k]} for k in ("plain", "override"))
    extra = len({c.train for c in eval_units(override, "coop") if c.protocol == "cross_dataset"})
    assert after == {**before, "coop": before["coop"] + extra}


def test_train_and_evaluate_pair_each_protocol_with_its_own_model(tmp_path, small_toy):
    """CoOp with a base-to-new and a cross-dataset override: base-to-new and cross-dataset evaluations read models
    trained with the override, few-shot and DG ones the default model, also on the shared transfer-source cell."""
    _, layout, data_root = make_project(tmp_path)
    overrides = {"base2new": PHOTO, "cross_dataset": PHOTO}
    params = tiny_params(data_root=str(data_root), methods=["coop"])
    params["method_params"] = {"coop": {**smoke_params(["coop"])["coop"], **overrides}}
    cfg = parse(SuiteConfig, params, "params.yaml")
    for d in cfg.all_datasets():
        download.run(dataset=d, data_root=data_root, layout=layout)
    for d in cfg.datasets:
        split.run(dataset=d, cfg=cfg, layout=layout)
        extract.run(backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root)
    for d in cfg.targets:
        extract.run(backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root, test_only=True)
    for d in cfg.datasets:
        out = train.run(backbone="toy_vit", method="coop", dataset=d, cfg=cfg, layout=layout)
        assert out["planned"] == out["trained"] == len(training_units(cfg, "coop", d))
    evaluate.run(backbone="toy_vit", method="coop", cfg=cfg, layout=layout)

    records = {}  # train key -> (directory name, cell.json)
    for cell_json in layout.root.glob("models/toy_vit/coop/*/*/cell.json"):
        record = json.loads(cell_json.read_text())
        records[record["key"]] = (cell_json.parent.name, record)
    hashes = {p: stable_hash({"method": "coop", "config": cfg.method_config("coop", p)}) for p in cfg.protocols}
    assert hashes["base2new"] == hashes["cross_dataset"] != hashes["few_shot"] == hashes["domain_generalization"]
    results = pd.read_parquet(layout.results("toy_vit", "coop") / RESULT_FILE)
    for row in results.itertuples():
        name, record = records[row.train_key]
        assert record["config_hash"] == hashes[row.protocol] == row.config_hash
        assert name.endswith(f"-{row.protocol}") == (row.protocol in overrides)
    transfer = cfg.protocols["cross_dataset"]
    shared = results[
        (results.protocol != "base2new")
        & (results.source == transfer.source)
        & (results.shots == transfer.shots)
        & (results.seed == transfer.seeds[0])
    ]
    assert shared.groupby("protocol").train_key.nunique().to_dict() == {
        "cross_dataset": 1,
        "domain_generalization": 1,
        "few_shot": 1,
    }
    assert shared.train_key.nunique() == 2  # the transfer source's cell, trained twice
    cell = f"toy_vit/coop/{transfer.source}/all_shot{transfer.shots}_seed{transfer.seeds[0]}"
    invariants = run_invariants(results)  # each of the two models keeps its own entries, whatever the row order
    assert run_invariants(results.iloc[::-1]) == invariants
    assert f"{cell}/steps" in invariants and f"{cell}-cross_dataset/steps" in invariants
    own_test = f"eval/{transfer.source}/all/n"
    assert f"{cell}/{own_test}" in invariants and f"{cell}-cross_dataset/{own_test}" in invariants


def test_fidelity_lists_a_value_per_protocol_where_the_protocols_differ():
    from dataclasses import replace

    from clipbench import fidelity

    paper = fidelity.load_paper_suite()
    coop = {**paper.method_params["coop"], "base2new": {**paper.method_params["coop"]["base2new"], "lr": 1e-3}}
    found = fidelity.problems(fidelity.assess(replace(paper, method_params={**paper.method_params, "coop": coop})))
    assert len(found) == 1 and found[0].startswith("coop: lr: differs from the reference without a documented reason")
    assert "clipbench 'few_shot, cross_dataset, domain_generalization: 2e-3; base2new: 1e-3'" in found[0]


def test_the_gpu_hours_plan_counts_the_transfer_sources_extra_cells():
    from clipbench import compute_plan

    paper = load_suite(compute_plan.__file__.rsplit("/clipbench/", 1)[0] + "/configs/paper.yaml")
    methods = {m.name: m for m in compute_plan.image_level_methods(paper)}
    assert [c.lam for c in methods["clipfit"].transfer_configs] == [8.0] and not methods["clip_cite"].transfer_configs
    source = compute_plan.DatasetSize("imagenet", classes=4, train=100, val=10, test=30)
    p = compute_plan.PaperProtocols((source,), (), (2,), 1, 2, "imagenet", 10)
    recipe = SimpleNamespace(epochs=5, batch_size=1000, by_dataset=None)
    alone = compute_plan.image_level_flops(compute_plan.ImageLevelMethod("m", recipe), p, 1.0, 0.0)
    extra = compute_plan.ImageLevelMethod("m", recipe, (SimpleNamespace(epochs=7, batch_size=1000, by_dataset=None),))
    both = compute_plan.image_level_flops(extra, p, 1.0, 0.0)
    assert both["train"] - alone["train"] == 7 * 2 * 4 * 3  # one more 2-shot cell of 4 classes, 7 epochs, 3 passes
    assert both["eval_images"] - alone["eval_images"] == 30
