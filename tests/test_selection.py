"""The selection split (``params.yaml: selection``): parsing, the methods' declarations, the full_val data flow,
the no-validation-split fallback, the plan's extraction count and the report line."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clipbench import plan, selection
from clipbench.compute_plan import DatasetSize, PaperProtocols, pool_bound
from clipbench.config import SuiteConfig
from clipbench.data import DATASETS, metadata
from clipbench.data.fullval import FILE as FULL_VAL_FILE
from clipbench.data.fullval import read_full_val
from clipbench.data.index import load_index
from clipbench.data.kshot import relabel
from clipbench.data.toy import suite as toy_suite
from clipbench.errors import ConfigError
from clipbench.features import read_feature_dir
from clipbench.methods import METHODS
from clipbench.methods.work import Arch
from clipbench.pipeline import aggregate, download, extract, split, train
from clipbench.protocols import split_needs, training_cells, training_units
from clipbench.typed import parse

from conftest import make_project, synthetic_task, tiny_params
from coop_fixtures import unique_png

SOURCE = "toy_objects"


def test_selection_parses_defaults_to_fewshot_val_and_rejects_unknown_values():
    assert parse(SuiteConfig, tiny_params(), "p").selection == "fewshot_val"
    assert parse(SuiteConfig, tiny_params(selection="full_val"), "p").selection == "full_val"
    with pytest.raises(ConfigError) as err:
        parse(SuiteConfig, tiny_params(selection="test_val"), "p")
    message = str(err.value)
    assert "selection" in message and "fewshot_val, full_val" in message and "\n" not in message


def test_methods_declare_what_they_select():
    declared = {name: METHODS.get(name).selects(METHODS.get(name).Config()) for name in METHODS.names()}
    assert {n: s for n, s in declared.items() if s} == {
        "linear_probe": "C",
        "tip_adapter": "α/β",
        "tip_adapter_f": "α/β",
    }
    assert METHODS.get("tip_adapter_f").selects(METHODS.get("tip_adapter_f").Config(select_epoch_on_val=True)) == (
        "epoch, α/β"
    )
    adapter = METHODS.get("clip_adapter")
    assert adapter.selects(adapter.Config(select_lr=True, select_alpha=True)) == "lr, α"
    prolip = METHODS.get("prolip")
    assert prolip.selects(prolip.Config(select_on_val=True)) == "lr, λ"


def test_a_method_that_declares_no_selection_ignores_the_validation_set():
    """CLIP-Adapter with its grids off declares no selection: a different val set leaves its state unchanged, so
    ``selection`` may stay out of its cell keys."""
    adapter = METHODS.get("clip_adapter")
    task = synthetic_task()
    other = replace(task, val=replace(task.val, plain=torch.randn_like(task.val.plain)))

    def fit(config, t):
        model = adapter(config)
        model.fit(t)
        return model.state_dict()

    off = adapter.Config(epochs=3)
    assert adapter.selects(off) == ""
    a, b = fit(off, task), fit(off, other)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _larger_val(monkeypatch) -> None:
    """12-20 validation images per class in the source: more than any few-shot validation set (min(K, 4))."""
    objects = toy_suite.TOY_DATASETS[SOURCE]
    monkeypatch.setitem(toy_suite.TOY_DATASETS, SOURCE, replace(objects, per_class=(8, 20, 5)))


def _run_data(cfg: SuiteConfig, layout, data_root: Path, datasets: tuple[str, ...]) -> None:
    for d in cfg.all_datasets():
        download.run(dataset=d, data_root=data_root, layout=layout)
    for d in datasets:
        split.run(dataset=d, cfg=cfg, layout=layout)
        extract.run(backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root)


@pytest.fixture
def full_val(tmp_path, small_toy, monkeypatch):
    """A miniature project extracted with ``selection: full_val`` (toy_objects only), and its default twin."""
    _larger_val(monkeypatch)
    _, layout, data_root = make_project(tmp_path)
    cfg = parse(SuiteConfig, tiny_params(data_root=str(data_root), selection="full_val"), "test")
    _run_data(cfg, layout, data_root, (SOURCE,))
    return cfg, dataclasses.replace(cfg, selection="fewshot_val"), layout


def test_full_val_gives_a_selecting_method_exactly_the_datasets_val_images(full_val):
    cfg, _, layout = full_val
    index = load_index(layout.dataset_index(SOURCE))
    val_paths = {r.path for r in index.splits.val}
    assert val_paths and [r.path for r in read_full_val(layout.splits(SOURCE))] == [r.path for r in index.splits.val]
    fit = read_feature_dir(layout.fit_features("toy_vit", SOURCE))
    assert val_paths <= set(fit.index["val"])
    job = train.TrainJob("toy_vit", "linear_probe", SOURCE, cfg, layout)
    inputs = replace(job.features(), image_dir=Path(cfg.data_root) / index.image_root)  # val_images as well
    assert {r.path for r in inputs.selection_val} == val_paths
    assert not val_paths & {r.path for r in index.splits.test + index.splits.train}
    for cell in training_cells(cfg, SOURCE):
        split_ = job.split(cell)
        task = train.build_task(cell, split_, inputs)
        expected = relabel(index.splits.val, train.cell_labels(cell, split_))
        assert task.val_images.paths == tuple(r.path for r in expected)
        assert torch.equal(task.val.labels, torch.tensor([r.label for r in expected]))
        rows = fit.rows("val", [r.path for r in expected])
        assert torch.equal(task.val.plain, fit.tensors["val_plain"][rows])
        assert len(task.val) > len(relabel(split_.val, train.cell_labels(cell, split_)))  # more than few-shot


def test_full_val_changes_only_selecting_methods_keys_and_records_the_lineage(full_val):
    cfg, default, layout = full_val
    for method in cfg.methods:
        units = training_units(cfg, method, SOURCE)
        full = train.TrainJob("toy_vit", method, SOURCE, cfg, layout)
        few = train.TrainJob("toy_vit", method, SOURCE, default, layout)
        changed = [full.key(u) != few.key(u) for u in units]
        assert all(changed) if method == "linear_probe" else not any(changed), method
        few_inputs = few.features()
        assert not few_inputs.selection_val
    train.run(backbone="toy_vit", method="linear_probe", dataset=SOURCE, cfg=cfg, layout=layout)
    cell = training_cells(cfg, SOURCE)[0]
    record = json.loads((layout.models("toy_vit", "linear_probe", SOURCE) / cell.name / "cell.json").read_text())
    n_val = len(load_index(layout.dataset_index(SOURCE)).splits.val)
    assert record["selection"]["used"] == "full_val" and record["selection"]["images"] == n_val


def test_default_selection_writes_no_full_val_list_and_encodes_only_few_shot_val(tmp_path, small_toy, monkeypatch):
    _larger_val(monkeypatch)
    _, layout, data_root = make_project(tmp_path)
    cfg = parse(SuiteConfig, tiny_params(data_root=str(data_root)), "test")
    _run_data(cfg, layout, data_root, (SOURCE,))
    assert not (layout.splits(SOURCE) / FULL_VAL_FILE).exists()
    fit = read_feature_dir(layout.fit_features("toy_vit", SOURCE))
    assert len(fit.index["val"]) < len(load_index(layout.dataset_index(SOURCE)).splits.val)


def test_the_full_val_list_does_not_depend_on_the_methods(tmp_path, small_toy):
    """The split stage's output depends on ``selection``, not on which methods select: changing a method's
    parameters must never re-run every split stage (its DVC params are ``protocols`` and ``selection``)."""
    _, layout, data_root = make_project(tmp_path)
    params = tiny_params(data_root=str(data_root), selection="full_val", methods=["zeroshot"], method_params={})
    cfg = parse(SuiteConfig, params, "t")
    assert selection.needs_full_val(cfg, SOURCE) and selection.summary_line(cfg) == ""
    _run_data(cfg, layout, data_root, (SOURCE,))
    assert (layout.splits(SOURCE) / FULL_VAL_FILE).is_file()


def write_csv(root: Path, rows_by_split: dict) -> None:
    """CSV lists (``path,label,classname``) and a distinct decodable PNG per listed image."""
    for split_name, rows in rows_by_split.items():
        lines = ["path,label,classname"] + [f"{p},{lbl},{name}" for p, lbl, name in rows]
        (root / f"{split_name}.csv").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split_name}.csv").write_text("\n".join(lines) + "\n")
        for p, _, _ in rows:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            (root / p).write_bytes(unique_png(str(root / p)))


@pytest.fixture
def isolated_registry(monkeypatch):
    """A custom dataset registered by a test disappears after it."""
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    monkeypatch.setattr(DATASETS, "_loaded", dict(DATASETS._loaded))
    monkeypatch.setattr(metadata, "_REGISTERED", {})


def test_a_dataset_without_val_split_falls_back_to_fewshot_val(tmp_path, small_toy, isolated_registry):
    """A custom CSV dataset without ``val.csv`` (like ImageNet): few-shot val from unused training images, the
    fallback recorded in the cell's selection record and named in the report line."""
    _, layout, data_root = make_project(tmp_path)
    rows = [(f"img/t{i}.png", i % 2, ["bolt", "nut"][i % 2]) for i in range(12)]
    write_csv(data_root / "parts", {"train": rows, "test": [("img/x0.png", 0, "bolt"), ("img/x1.png", 1, "nut")]})
    params = tiny_params(data_root=str(data_root), selection="full_val")
    params["custom_datasets"] = {"parts": {"format": "csv", "path": "parts"}}
    params = json.loads(json.dumps(params).replace('"toy_textures"', '"parts"'))
    cfg = parse(SuiteConfig, params, "test")
    _run_data(cfg, layout, data_root, ("parts",))
    split.run(dataset=SOURCE, cfg=cfg, layout=layout)  # toy_objects has a validation split: its list is written
    assert not load_index(layout.dataset_index("parts")).splits.val
    assert not (layout.splits("parts") / FULL_VAL_FILE).exists()
    job = train.TrainJob("toy_vit", "linear_probe", "parts", cfg, layout)
    unit = training_units(cfg, "linear_probe", "parts")[0]
    cell = unit.cell
    assert job.selection_split(unit) == {"requested": "full_val", "used": "fewshot_val", "reason": selection.FALLBACK}
    few = train.TrainJob("toy_vit", "linear_probe", "parts", dataclasses.replace(cfg, selection="fewshot_val"), layout)
    assert job.key(unit) != few.key(unit)  # the lineage differs, so the key does
    split_ = job.split(cell)
    few_val = relabel(split_.val, train.cell_labels(cell, split_))
    assert torch.equal(
        train.build_task(cell, split_, job.features()).val.labels, torch.tensor([r.label for r in few_val])
    )
    line = aggregate._selection_line(cfg, layout)
    assert "; parts: no validation split of its own" in line and SOURCE not in line.split(";", 1)[1]


def test_summary_states_the_selection_split_next_to_the_template_line(tmp_path):
    cfg = parse(SuiteConfig, tiny_params(), "p")
    line = selection.summary_line(cfg)
    assert line == "Selection (linear_probe C): few-shot validation set, min(K, 4) images per class.\n"
    full = selection.summary_line(dataclasses.replace(cfg, selection="full_val"))
    assert full.startswith("Selection (linear_probe C): the source dataset's whole validation split")
    import pandas as pd

    from clipbench.results import COLUMNS

    aggregate.write_tables(
        pd.DataFrame(columns=COLUMNS), None, tmp_path, suite="t", template_set="custom", selection_line=line
    )
    text = (tmp_path / "summary.md").read_text()
    assert "template setting).\n\n" + line + "\n" in text


def test_plan_counts_the_whole_validation_split_under_full_val(small_toy, monkeypatch):
    _larger_val(monkeypatch)
    cfg = parse(SuiteConfig, tiny_params(), "p")
    full = dataclasses.replace(cfg, selection="full_val")
    arch = Arch("m", 32, 8, 16, 16, 1.0, 1.0, 0.0, 0.0, ())
    extra = 0
    for d in cfg.datasets:
        size = plan.dataset_size(d)
        extra += size.val - min(size.val, size.classes * sum(min(k, 4) for k, _ in split_needs(cfg, d)))
    assert extra > 0
    assert (
        plan.shared_row(full, "toy_vit", arch).image_passes - plan.shared_row(cfg, "toy_vit", arch).image_passes
        == extra
    )
    big = DatasetSize("d", 100, 10_000, 5_000, 2_000)
    p = PaperProtocols((big,), (), (1, 16), 3, 16, "d", 10)
    assert pool_bound(big, p)[1] == 100 * (1 + 4) * 3 and pool_bound(big, replace(p, full_val=True))[1] == 5_000


def test_selection_follows_each_protocols_config(full_val):
    """A protocol override that turns CLIP-Adapter's α grid on (base2new only) puts the selection split into the
    keys of base2new's models and no other; the summary names the method."""
    cfg, _, layout = full_val
    params = tiny_params(data_root=cfg.data_root, selection="full_val")
    params["methods"] = ["clip_adapter"]
    params["method_params"] = {"clip_adapter": {"epochs": 1, "base2new": {"select_alpha": True}}}
    over = parse(SuiteConfig, params, "test")
    job = train.TrainJob("toy_vit", "clip_adapter", SOURCE, over, layout)
    units = training_units(over, "clip_adapter", SOURCE)
    chosen = {u.variant: job.selection_split(u) for u in units}
    assert chosen.pop("base2new")["used"] == "full_val"
    assert set(chosen) == {""} and chosen[""] is None
    assert "clip_adapter α" in selection.summary_line(over)


def test_the_method_table_names_the_full_split_where_the_suite_selects_on_it():
    """The declared policies say "few-shot validation set"; under ``full_val`` the table must not leave it there."""
    from clipbench.pipeline.aggregate import _method_notes

    cfg = parse(SuiteConfig, tiny_params(methods=["zeroshot", "linear_probe"], method_params={}), "test")
    default = _method_notes(cfg)
    assert "this suite selects on" not in default
    full = _method_notes(dataclasses.replace(cfg, selection="full_val")).splitlines()
    probe, zero = (next(line for line in full if line.startswith(f"| {m} ")) for m in ("linear_probe", "zeroshot"))
    assert selection.DESCRIPTIONS["full_val"] in probe and "this suite selects on" not in zero
