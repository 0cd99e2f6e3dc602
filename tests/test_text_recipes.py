"""Per-method text recipes: each method's template set per dataset, checked at load, extracted once per (dataset,
set) where it differs from the suite's, and read by train and evaluate for every dataset a cell touches."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from clipbench import plan, recipes, reference
from clipbench.backbones.registry import BACKBONES
from clipbench.config import SuiteConfig, load_suite
from clipbench.data import imagenet_family_datasets, metadata
from clipbench.errors import ConfigError
from clipbench.features import load_text, read_feature_dir
from clipbench.layout import Layout
from clipbench.methods import METHODS
from clipbench.pipeline import code, download, evaluate, extract, split, train
from clipbench.results import RESULT_FILE
from clipbench.suites import smoke_params
from clipbench.typed import parse, to_plain

from conftest import make_project, tiny_params

ROOT = Path(__file__).resolve().parents[1]
ALT = ["a toy rendering of a {}."]  # a second set for toy_objects and its sketch target only (not toy_textures)
TEXTURES = metadata.templates("toy_textures", "custom")  # the suite's sets there
SKETCH = metadata.templates("toy_objects_sketch", "custom")


def test_the_toy_suite_resolves_every_method_to_custom_and_needs_no_extra_classifier():
    cfg = load_suite(ROOT / "params.yaml")
    used = recipes.used_sets(cfg)
    assert {m for m, _, _ in used} == set(cfg.methods) and set(used.values()) == {"custom"}
    assert all(recipes.extra_sets(cfg, d) == () for d in cfg.all_datasets())


def test_the_paper_suite_runs_each_reference_recipe():
    cfg = load_suite(ROOT / "configs/paper.yaml")
    for method in ("tip_adapter", "tip_adapter_f", "prolip"):
        assert {recipes.method_set(cfg, method, "few_shot", d) for d in cfg.datasets} == {"imagenet7"}
    assert recipes.method_set(cfg, "clipfit", "base2new", "dtd") == "clipfit"
    assert recipes.method_set(cfg, "coop", "few_shot", "imagenet") == cfg.text.template_set == "custom"
    family = set(imagenet_family_datasets()) & set(cfg.all_datasets())
    # one extra classifier per (dataset, set) whose templates differ from the suite's, shared by the methods
    extra = {d: recipes.extra_sets(cfg, d) for d in cfg.all_datasets()}
    assert {d for d, sets in extra.items() if sets} == family | {"dtd"}
    assert all(extra[d] == ("imagenet7",) for d in family) and extra["dtd"] == ("clipfit",)


def test_the_recipe_is_part_of_the_config_keys_and_params():
    tip = METHODS.get("tip_adapter").Config
    assert to_plain(tip())["templates"] == "imagenet7" and to_plain(tip(templates="custom"))["templates"] == "custom"
    assert to_plain(METHODS.get("coop").Config())["templates"] is None


def test_a_set_the_dataset_lacks_resolves_to_the_suite_set():
    tip = METHODS.get("tip_adapter").Config()
    assert recipes.template_set(tip, "toy_objects", "custom") == "custom"
    assert recipes.template_set(tip, "imagenet", "custom") == "imagenet7"
    assert recipes.classifier_set("caltech101", "imagenet7", "custom") is None  # the same template: one file
    assert recipes.classifier_set("imagenet", "imagenet7", "custom") == "imagenet7"


@pytest.mark.parametrize(
    "method_params,needle",
    [
        (
            {"zeroshot": {"templates": "imagenet8"}},
            "method_params.zeroshot.templates: unknown template set 'imagenet8'",
        ),
        (
            {"zeroshot": {"few_shot": {"templates": "photo"}}},
            "method_params.zeroshot.few_shot.templates: unknown template set 'photo'",
        ),
        (
            {"tip_adapter": {"by_dataset": {"toy_textures": {"templates": "nope"}}}},
            "(method 'tip_adapter', dataset 'toy_textures')",
        ),
    ],
)
def test_an_unknown_set_is_one_error_line_at_load(method_params, needle):
    tip = smoke_params(["tip_adapter"])["tip_adapter"]
    method_params = {"tip_adapter": {**tip, **method_params.pop("tip_adapter", {})}, **method_params}
    params = tiny_params(methods=["zeroshot", "tip_adapter"], method_params=method_params)
    with pytest.raises(ConfigError) as err:
        parse(SuiteConfig, params, "params.yaml")
    assert needle in str(err.value) and "known sets: clipfit, custom, ensemble, imagenet7" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture
def alt_set(monkeypatch):
    """A second template set ``alt`` for toy_objects and toy_objects_sketch (the toy datasets have only custom)."""
    table = json.loads(json.dumps(metadata.template_table()))
    for dataset in ("toy_objects", "toy_objects_sketch"):
        table[dataset]["alt"] = ALT
    monkeypatch.setattr(metadata, "_templates", lambda: table)
    recipes.known_sets.cache_clear()
    yield
    recipes.known_sets.cache_clear()


def run_suite(tmp_path: Path, recipe: dict) -> tuple[SuiteConfig, Layout]:
    """Every stage up to evaluate for zeroshot, tip_adapter and linear_probe, the first two with ``recipe``."""
    _, layout, data_root = make_project(tmp_path)
    methods = ["zeroshot", "tip_adapter", "linear_probe"]
    params = tiny_params(data_root=str(data_root), methods=methods)
    tip = smoke_params(["tip_adapter"])["tip_adapter"]
    probe = params["method_params"]["linear_probe"]
    params["method_params"] = {"linear_probe": probe, "zeroshot": recipe, "tip_adapter": {**tip, **recipe}}
    cfg = parse(SuiteConfig, params, "params.yaml")
    for d in cfg.all_datasets():
        download.run(dataset=d, data_root=data_root, layout=layout)
    for d in cfg.datasets:
        split.run(dataset=d, cfg=cfg, layout=layout)
    for d in cfg.all_datasets():
        extract.run(
            backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root, test_only=d in cfg.targets
        )
    for m in methods:
        for d in cfg.datasets:
            train.run(backbone="toy_vit", method=m, dataset=d, cfg=cfg, layout=layout)
        evaluate.run(backbone="toy_vit", method=m, cfg=cfg, layout=layout)
    return cfg, layout


def cell_records(layout: Layout, method: str) -> dict[str, dict]:
    paths = layout.root.glob(f"models/toy_vit/{method}/*/*/cell.json")
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text()) for p in paths}


def test_a_method_with_another_recipe_trains_and_evaluates_with_its_classifier(
    tmp_path, small_toy, alt_set, monkeypatch
):
    scored = {}  # (method, protocol, dataset) -> the evaluation target's templates and classifier
    predict = evaluate._predict

    def spy(model, target, x, cell, inputs):
        scored[(inputs.method.name, cell.protocol, cell.dataset)] = (target.space.templates, target.text_weights)
        return predict(model, target, x, cell, inputs)

    monkeypatch.setattr(evaluate, "_predict", spy)
    cfg, layout = run_suite(tmp_path, {"templates": "alt"})
    extra = {
        p.relative_to(layout.root / "features/toy_vit").as_posix()
        for p in layout.root.glob("features/*/*/text/*.safetensors")
    }
    assert extra == {"toy_objects/text/alt.safetensors", "toy_objects_sketch/text/alt.safetensors"}  # shared by two
    # the directory output exists without recipes too, naming no set (never empty: DVC warns about empty outputs)
    assert json.loads((layout.text_sets("toy_vit", "toy_textures") / "sets.json").read_text()) == {"sets": []}

    # train: the source's classifier and label space are the recipe's; the suite-set method keeps the suite's
    alt = {m: cell_records(layout, m) for m in ("tip_adapter", "linear_probe")}
    for name, record in alt["tip_adapter"].items():
        expected = ALT if name.startswith("toy_objects/") else list(TEXTURES)  # toy_textures has no alt set
        assert record["text"]["templates"] == expected
    assert {r["text"]["template_set"] for r in alt["linear_probe"].values()} == {"custom"}

    # evaluate: zeroshot on toy_objects_sketch (DG target) is scored with the alt classifier
    weights, scale, meta = load_text(layout.text_features("toy_vit", "toy_objects_sketch", "alt"))
    assert meta["templates"] == ALT
    for method in ("zeroshot", "tip_adapter"):
        templates, text = scored[(method, "domain_generalization", "toy_objects_sketch")]
        assert templates == tuple(ALT) and torch.equal(text.cpu(), weights)
        assert scored[(method, "cross_dataset", "toy_textures")][0] == TEXTURES
    assert scored[("linear_probe", "domain_generalization", "toy_objects_sketch")][0] == SKETCH
    test = read_feature_dir(layout.test_features("toy_vit", "toy_objects_sketch")).tensors
    logits = scale * F.normalize(test["features"].float(), dim=-1) @ weights.T
    expected = 100.0 * (logits.argmax(1) == test["labels"]).float().mean().item()
    results = pd.read_parquet(layout.results("toy_vit", "zeroshot") / RESULT_FILE)
    row = results[(results.protocol == "domain_generalization") & (results.dataset == "toy_objects_sketch")].iloc[0]
    assert row.value == pytest.approx(expected)

    # keys and lineage differ from the same suite with every method on the suite's set
    _, plain = run_suite(tmp_path / "plain", {})
    assert not list(plain.root.glob("features/*/*/text/*.safetensors"))
    before = cell_records(plain, "tip_adapter")
    for name, record in alt["tip_adapter"].items():
        assert record["key"] != before[name]["key"]
    on_objects = [n for n in before if n.startswith("toy_objects/")]
    assert all(alt["tip_adapter"][n]["text"]["hash"] != before[n]["text"]["hash"] for n in on_objects)
    keys = {n: r["key"] for n, r in cell_records(plain, "linear_probe").items()}
    assert keys == {n: r["key"] for n, r in alt["linear_probe"].items()}  # the suite-set method is unchanged
    assert torch.equal(*(load_text(p.text_features("toy_vit", "toy_objects"))[0] for p in (layout, plain)))


def test_the_plan_counts_the_prompts_of_the_extra_classifiers():
    paper = load_suite(ROOT / "configs/paper.yaml")
    one = replace(paper, methods=("coop",))  # no method with another recipe: the suite's classifiers only
    row, base = (plan.suite_plan(cfg).shared[0] for cfg in (paper, one))
    extra = sum(
        plan.dataset_size(d).classes * len(metadata.templates(d, s))
        for d in paper.all_datasets()
        for s in recipes.extra_sets(paper, d)
    )
    assert extra > 0 and row.prompt_passes - base.prompt_passes == extra


def test_published_numbers_and_the_summary_follow_each_methods_recipe():
    paper = load_suite(ROOT / "configs/paper.yaml")
    line = recipes.summary_line(paper)
    assert "tip_adapter `imagenet7` on imagenet," in line and "clipfit `clipfit` on dtd" in line
    assert "coop" not in line and recipes.summary_line(load_suite(ROOT / "params.yaml")) == ""
    rn50 = next(
        k for k in BACKBONES.names() if BACKBONES.get(k).model == "RN50" and BACKBONES.get(k).pretrained == "openai"
    )
    entry = {
        "protocol": "few_shot",
        "method": "tip_adapter",
        "backbone": rn50,
        "source": "imagenet",
        "shots": 16,
        "column": "imagenet",
        "metric": "acc",
        "mean": 60.0,
        "status": "ok",
        "datasets": "",
    }
    entries = pd.DataFrame([entry, {**entry, "source": "dtd", "column": "dtd"}])
    ran = reference.match(
        entries, lambda method, protocol, dataset: recipes.method_set(paper, method, protocol, dataset)
    )
    assert list(ran.published) == [62.01, 60.93]  # ImageNet: the 7-template number; DTD: the custom template
    assert math.isnan(reference.match(entries, "custom").published[0])  # the suite's one set misses ImageNet's


def test_the_code_stage_lists_the_extra_classifiers_extract_depends_on(tmp_path):
    paper = load_suite(ROOT / "configs/paper.yaml")
    assert code.text_sets(paper, "dtd") == {"clipfit": ["a photo of a {}, a type of texture."]}
    assert code.text_sets(paper, "caltech101") == {}
    toy = load_suite(ROOT / "params.yaml")
    layout = Layout(tmp_path)
    code.run(cfg=toy, layout=layout)
    assert all(json.loads(layout.code("text", d).read_text()) == {"sets": {}} for d in toy.all_datasets())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("extract", "extract_target"):
        assert "code/text/${item.dataset}.json" in stages[name]["deps"]
        assert "features/${item.backbone}/${item.dataset}/text" in stages[name]["outs"]
    assert "features/${item.backbone}/${item.dataset}/text" in stages["train"]["deps"]
