"""The pure parts of `clipbench bench` (no timing assertions): floors, counters, suite reduction, rendering."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from clipbench import compute_plan, features
from clipbench.bench import dvc_overhead, encodes, gpu_hours, instruments, report, runner, training
from clipbench.bench.sizes import CAPS, BenchSize
from clipbench.config import SuiteConfig, load_suite
from clipbench.methods import METHODS, Inputs
from clipbench.protocols import eval_cells
from clipbench.typed import parse

ROOT = Path(__file__).resolve().parents[1]


def test_needed_encodes_is_each_image_once_plus_views():
    pools = [encodes.PoolSize("src", train=10, val=4, test=20, views=33), encodes.PoolSize("target", 0, 0, 7)]
    assert encodes.needed_encodes(pools) == 10 + 33 + 4 + 20 + 7
    assert encodes.needed_encodes(pools[1:]) == 7


def test_tally_counts_image_tower_inputs_and_file_decodes(tmp_path):
    bb = instruments.random_backbone("clipbench-toy-vit", "toy_vit")
    paths = instruments.write_jpegs(tmp_path, 3, side=48)
    with instruments.tally_encoder() as tally:
        features.encode_paths(bb, tmp_path, paths, batch_size=2, views=features.ViewSpec(2, (0.5, 1.0), 0))
        bb.text_classifier([["a photo of a cat."]])  # the text tower is not counted
    assert (tally.encoded, tally.decoded) == (3 * (1 + 2), 3)
    with instruments.tally_encoder() as after:
        pass
    assert after.encoded == 0  # the hook is removed on exit


def test_reduced_suite_is_valid_smaller_and_capped():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    full = parse(SuiteConfig, params, "params")
    small = parse(SuiteConfig, runner.reduced_suite(params), "reduced")
    assert small.datasets == full.datasets[:1] and small.targets == full.targets[:1]
    assert len(eval_cells(small)) < len(eval_cells(full))
    assert small.features.max_views == 2
    if "clip_adapter" in small.methods:
        assert small.method_config("clip_adapter").epochs <= CAPS["epochs"]


def test_stage_count_matches_the_dvc_expansion(tmp_path):
    from test_dvc_stages import stage_list

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = stage_list(tmp_path, params)
    assert dvc_overhead.stage_count(params) == len(stages)
    kinds = Counter(name.split("@")[0] for name in stages)
    assert dvc_overhead.stage_table(params) == dict(kinds)


def test_parse_stage_log_keeps_only_stage_commands():
    log = (
        "10.0 12.5 0 -m stages.extract --backbone toy_vit --dataset a\n"
        "20.0 20.5 0 -c print(1)\n"
        "30.0 31.0 2 -m stages.aggregate\n"
    )
    rows = dvc_overhead.parse_stage_log(log)
    assert rows == [("-m stages.extract --backbone toy_vit --dataset a", 2.5), ("-m stages.aggregate", 1.0)]
    assert dvc_overhead.stage_kinds(rows + [("-m stages.extract --dataset b", 0.5)]) == {
        "extract": [2, 3.0],
        "aggregate": [1, 1.0],
    }


def test_training_comparison_counts_the_reencoding_work(tmp_path):
    size = BenchSize(
        "tiny",
        True,
        None,
        (),
        train_classes=2,
        train_shots=2,
        train_views=2,
        adapter_epochs=3,
        prolip_iterations=4,
        memory_images=(1, 2),
    )
    adapter, prolip = training.training_speedup(tmp_path, size)
    assert adapter["images"] == prolip["images"] == 4
    assert adapter["cached_encoded"] == 4 * (1 + 2)
    assert adapter["reencode_encoded"] == 4 * 3 and prolip["reencode_encoded"] == 4 * 4


def _plan(sources=(), shots=(1, 2, 4, 8, 16), seeds=3) -> compute_plan.PaperProtocols:
    return compute_plan.PaperProtocols(tuple(sources), (), shots, seeds, max(shots), "imagenet", 10)


def test_pool_bound_caps_at_the_split_and_uses_test_without_val():
    p = _plan()
    small = compute_plan.DatasetSize("x", classes=10, train=50, val=0, test=100)
    assert compute_plan.pool_bound(small, p) == (50, min(100, 10 * (1 + 2 + 4 + 4 + 4) * 3))
    big = compute_plan.DatasetSize("y", classes=10, train=10_000, val=10_000, test=1)
    assert compute_plan.pool_bound(big, p) == (10 * 31 * 3, 10 * 15 * 3)


@dataclass(frozen=True)
class _Recipe:
    epochs: int = 5
    batch_size: int = 1000


def test_image_level_flops_follow_epochs_images_and_three_passes():
    d = compute_plan.DatasetSize("x", classes=4, train=100, val=10, test=30)
    p = _plan((d,), shots=(2,), seeds=1)
    method = compute_plan.ImageLevelMethod("m", _Recipe())
    fl = compute_plan.image_level_flops(method, p, f_img=1.0, f_txt=0.0)
    assert fl["train"] == 5 * (2 * 4 + 2 * 2) * 3  # few-shot cell (4 classes) + base-to-new cell (2 classes)
    assert fl["eval_images"] == 2 * 30  # each cell re-encodes its test set


def test_paper_plan_comes_from_the_paper_suite_and_the_dataset_specs():
    suite = load_suite(ROOT / "configs" / "paper.yaml")
    p = compute_plan.suite_protocols(suite)
    assert [d.name for d in p.sources] == list(suite.datasets) and len(p.targets) == len(suite.targets)
    assert compute_plan.DatasetSize.published("eurosat") == compute_plan.DatasetSize(
        "eurosat", 10, 13_500, 5_400, 8_100
    )
    n = len(suite.datasets) * (len(p.shots) + 1) * p.seeds  # few-shot cells + base-to-new cells
    assert len(compute_plan.training_cells(p)) == n
    image_level = {m.name for m in compute_plan.image_level_methods(suite)}
    assert image_level == {m for m in suite.methods if METHODS.get(m).requires is Inputs.IMAGES}


def test_image_level_recipes_follow_the_method_configs_per_dataset():
    from clipbench.methods.clip_cite import ClipCiteConfig
    from clipbench.methods.clipfit import ClipFitConfig

    fit = compute_plan.ImageLevelMethod("clipfit", ClipFitConfig())
    cite = compute_plan.ImageLevelMethod("clip_cite", ClipCiteConfig())
    assert fit.epochs("dtd") == ClipFitConfig().epochs and fit.epochs("imagenet") < fit.epochs("dtd")
    assert cite.batch_size("eurosat") < cite.batch_size("dtd") < cite.batch_size("imagenet")


def _fake_result(share: float) -> dict:
    machine = {
        "cpus": 2,
        "torch_threads": 1,
        "load_before": (3.0, 0, 0),
        "load_after": (4.0, 0, 0),
        "python": "3.11",
        "torch_version": "2",
        "gpu": "none",
    }
    flops = {"model": "ViT-B-16", "image_size": 224, "image_flops": 3.4e10, "text_flops": 5.8e9}
    return {
        "size": "quick",
        "total_s": 100.0,
        "machine": machine,
        "a": {
            "methods": ["zeroshot"],
            "pools": [{"dataset": "d", "train": 5, "val": 2, "test": 9, "views": 10}],
            "needed": 26,
            "extract_encoded": 26,
            "extract_decoded": 16,
            "methods_encoded": 0,
            "methods_decoded": 0,
            "recorded_encoded": 26,
            "cells": 3,
            "trained": 3,
        },
        "b": [
            {
                "model": "ViT-B-32",
                "image_size": 224,
                "images": 8,
                "batch_size": 4,
                "raw_ips": 10.0,
                "ours_ips": 9.5,
                "ratio": 0.95,
            }
        ],
        "c": [
            {
                "method": "CLIP-Adapter (real class)",
                "steps": "3 epochs",
                "images": 4,
                "extract_s": 1.0,
                "cached_encoded": 12,
                "cached_train_s": 0.5,
                "reencode_s": 6.0,
                "reencode_encoded": 12,
                "n_steps": 3,
                "reference_steps": 6,
            }
        ],
        "d": {
            "stages": 10,
            "wall_s": 50.0,
            "stage_s": 50.0 * (1 - share),
            "bookkeeping_s": 50.0 * share,
            "share": share,
            "per_stage_s": 5.0 * share,
            "noop_s": 3.0,
            "noop_ran": 0,
            "methods": ["zeroshot"],
            "toy_suite_stages": 40,
            "import_s": 2.0,
            "by_kind": dvc_overhead.stage_kinds([("-m stages.train --x", 4.0)]),
        },
        "e": [
            {"images": 10, "decoded": 10, "seconds": 1.0, "peak_rss_mb": 800.0, "decoded_if_held_mb": 2.0},
            {"images": 40, "decoded": 40, "seconds": 4.0, "peak_rss_mb": 804.0, "decoded_if_held_mb": 8.0},
        ],
        "f": gpu_hours.gpu_estimate(flops, load_suite(ROOT / "configs" / "paper.yaml")),
    }


@pytest.mark.parametrize(
    "share, verdict", [(0.05, "Goal on this reduced run: met"), (0.2, "Goal on this reduced run: **not met**")]
)
def test_render_has_every_section_and_honest_verdicts(share, verdict):
    text = report.render(_fake_result(share))
    for section in ("## (a)", "## (b)", "## (c)", "## (d)", "## (e)", "## (f)"):
        assert section in text
    assert "**26 / 26 = 1.000**" in text and "Goal met." in text
    assert verdict in text
    assert "**4.0×**" in text  # (c): 6 s re-encoding vs 1 s extraction + 0.5 s training
    assert "6.0× (6)" in text  # twice the steps: 12 s vs 1 s + 1 s
    assert "machine was shared" in text  # load average above the number of CPUs' comfort


def test_cli_offers_quick_and_full():
    from click.testing import CliRunner

    from clipbench.cli import main

    out = CliRunner().invoke(main, ["bench", "--help"])
    assert out.exit_code == 0 and "--quick / --full" in out.output and "reports/bench.md" in out.output


def test_overlapped_extraction_equals_sequential(tmp_path):
    bb = instruments.random_backbone("clipbench-toy-vit", "toy_vit")
    paths = instruments.write_jpegs(tmp_path, 7, side=48)
    views = features.ViewSpec(2, (0.5, 1.0), 0)
    counts = [features.EncodeCounter(), features.EncodeCounter()]
    seq, ovl = (
        features.encode_paths(bb, tmp_path, paths, 3, views, c, overlap=o)
        for c, o in zip(counts, (False, True), strict=True)
    )
    for key in ("plain", "pre", "views", "pre_views"):
        assert torch.equal(getattr(seq, key), getattr(ovl, key))
    assert seq.views.shape[:2] == (2, 7)
    assert counts[0] == counts[1] == features.EncodeCounter(decoded=7, encoded=7 * 3)


def test_verified_reads_cost_counts_every_sealed_artifact_and_renders(tmp_path):
    from clipbench.bench.verify import verify_cost
    from clipbench.cells import CellStore
    from clipbench.features import save_text, write_feature_dir

    write_feature_dir(tmp_path / "features" / "bb" / "d" / "test", {"x": torch.ones(3, 2)}, {"test": []}, {})
    save_text(tmp_path / "features" / "bb" / "d" / "text.safetensors", torch.ones(2, 2), 1.0, {})
    CellStore(tmp_path / "results" / "bb" / "m" / "cells").put("c", "k", lambda tmp: {"row": {}})
    g = verify_cost(tmp_path, repro_wall_s=100.0, methods=3)
    assert (g["feature_dirs"], g["cells"]) == (2, 1)
    assert g["weighted_s"] == pytest.approx(g["feature_s"] * 6 + g["cell_s"] * 2)
    assert g["share"] == pytest.approx(g["weighted_s"] / 100.0)
    text = report.render({**_fake_result(0.05), "g": {**g, "share": 0.01}})
    assert "## (g) Verified reads" in text and "**1.00%**" in text and "Goal: met." in text


@pytest.mark.parametrize("stage_s, verdict", [(95.0, "met"), (70.0, "**not met**")])
def test_fanout_section_reports_the_share_outside_stage_commands(stage_s, verdict):
    h = {"tasks": 5, "stages": 11, "slots": 2, "workspace_s": 4.0, "checkout_s": 6.0, "repro_s": 90.0}
    h.update(total_s=100.0, stage_s=stage_s, share=(100.0 - stage_s) / stage_s, launch_wall_s=80.0)
    h.update(serial_wall_s=120.0, final_ran=["aggregate", "track"])
    text = report.render({**_fake_result(0.05), "i": h})
    assert "## (i) `clipbench launch` fan-out overhead" in text
    assert f"**{100 * (100.0 - stage_s) / stage_s:.1f}%**" in text
    assert f"Goal on this reduced run: {verdict}" in text.split("## (i)")[1]


def test_encoder_passes_share_views_of_one_recipe_and_count_each_reference_run():
    from clipbench.bench.passes import encoder_passes, reference_passes, render
    from clipbench.plan import cell_shape
    from clipbench.protocols import training_units

    from conftest import tiny_params

    methods = {"clip_adapter": {"epochs": 6, "crop_scale": [0.5, 1.0]}, "tip_adapter": {"augment_views": 4}}
    params = tiny_params(methods=list(methods), method_params=methods)
    params["features"] = {**params["features"], "max_views": None}
    cfg = parse(SuiteConfig, params, "test")
    result = encoder_passes(cfg)
    alone, shared = result["per_method"], result["shared"]
    assert shared["views"] == alone["clip_adapter"]["views"] > alone["tip_adapter"]["views"]  # 6 >= 4: shared
    units = [u for d in cfg.datasets for u in training_units(cfg, "clip_adapter", d)]
    assert reference_passes(cfg, "clip_adapter")["views"] == sum(6 * cell_shape(u.cell).images for u in units)
    assert "| clip_adapter | " in render(result) and "goal ≤ 1.0" in render(result)
