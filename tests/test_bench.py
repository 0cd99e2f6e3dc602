"""The pure parts of `clipbench bench` (no timing assertions): floors, counters, suite reduction, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from clipbench import bench, compute_plan, features
from clipbench.config import SuiteConfig
from clipbench.protocols import eval_cells
from clipbench.typed import parse

ROOT = Path(__file__).resolve().parents[1]


def test_needed_encodes_is_each_image_once_plus_views():
    pools = [bench.PoolSize("src", train=10, val=4, test=20), bench.PoolSize("target", 0, 0, 7)]
    assert bench.needed_encodes(pools, views=3) == 10 * 4 + 4 + 20 + 7
    assert bench.needed_encodes(pools, views=0) == 10 + 4 + 20 + 7


def test_tally_counts_image_tower_inputs_and_file_decodes(tmp_path):
    bb = bench.random_backbone("clipbench-toy-vit", "toy_vit")
    paths = bench.write_jpegs(tmp_path, 3, side=48)
    with bench.tally_encoder() as tally:
        features.encode_paths(bb, tmp_path, paths, batch_size=2, views=features.ViewSpec(2, (0.5, 1.0), 0))
        bb.text_classifier([["a photo of a cat."]])  # the text tower is not counted
    assert (tally.encoded, tally.decoded) == (3 * (1 + 2), 3)
    with bench.tally_encoder() as after:
        pass
    assert after.encoded == 0  # the hook is removed on exit


def test_reduced_suite_is_valid_smaller_and_capped():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    full = parse(SuiteConfig, params, "params")
    small = parse(SuiteConfig, bench.reduced_params(params), "reduced")
    assert small.datasets == full.datasets[:1] and small.targets == full.targets[:1]
    assert len(eval_cells(small)) < len(eval_cells(full))
    assert small.features.views == 2
    if "clip_adapter" in small.methods:
        assert small.method_config("clip_adapter").epochs <= bench._SHRINK["epochs"]


def test_stage_count_matches_the_dvc_expansion(tmp_path):
    from test_dvc_stages import stage_list

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert bench.stage_count(params) == len(stage_list(tmp_path, params))


def test_parse_stage_log_keeps_only_stage_commands():
    log = ("10.0 12.5 0 -m stages.extract --backbone toy_vit --dataset a\n"
           "20.0 20.5 0 -c print(1)\n"
           "30.0 31.0 2 -m stages.aggregate\n")
    rows = bench.parse_stage_log(log)
    assert rows == [("-m stages.extract --backbone toy_vit --dataset a", 2.5), ("-m stages.aggregate", 1.0)]
    assert bench.stage_kinds(rows + [("-m stages.extract --dataset b", 0.5)]) == {"extract": [2, 3.0],
                                                                                    "aggregate": [1, 1.0]}


def test_training_comparison_counts_the_reencoding_work(tmp_path):
    size = bench.BenchSize("tiny", True, None, (), train_classes=2, train_shots=2, train_views=2, adapter_epochs=3,
                           prolip_iterations=4, memory_images=(1, 2))
    adapter, prolip = bench.training_speedup(tmp_path, size)
    assert adapter["images"] == prolip["images"] == 4
    assert adapter["cached_encoded"] == 4 * (1 + 2)
    assert adapter["reencode_encoded"] == 4 * 3 and prolip["reencode_encoded"] == 4 * 4


def test_pool_bound_caps_at_the_split_and_uses_test_without_val():
    p = compute_plan.PaperProtocols()
    small = compute_plan.DatasetSize("x", classes=10, train=50, val=0, test=100)
    assert compute_plan.pool_bound(small, p) == (50, min(100, 10 * (1 + 2 + 4 + 4 + 4) * 3))
    big = compute_plan.DatasetSize("y", classes=10, train=10_000, val=10_000, test=1)
    assert compute_plan.pool_bound(big, p) == (10 * 31 * 3, 10 * 15 * 3)


def test_image_level_flops_follow_epochs_images_and_three_passes():
    p = compute_plan.PaperProtocols(shots=(2,), seeds=1, base2new_shots=2)
    d = compute_plan.DatasetSize("x", classes=4, train=100, val=10, test=30)
    method = compute_plan.ImageLevelMethod("m", {"*": 5}, {"*": 1000}, text_per_step_all_classes=False)
    fl = compute_plan.image_level_flops(method, p, f_img=1.0, f_txt=0.0, sources=(d,), targets=())
    assert fl["train"] == 5 * (2 * 4 + 2 * 2) * 3  # few-shot cell (4 classes) + base-to-new cell (2 classes)
    assert fl["eval_images"] == 2 * 30  # each cell re-encodes its test set
    assert len(compute_plan.training_cells(compute_plan.PAPER)) == 11 * 5 * 3 + 11 * 3


def _fake_result(share: float) -> dict:
    machine = {"cpus": 2, "torch_threads": 1, "load_before": (3.0, 0, 0), "load_after": (4.0, 0, 0),
               "python": "3.11", "torch_version": "2", "gpu": "none"}
    flops = {"model": "ViT-B-16", "image_size": 224, "image_flops": 3.4e10, "text_flops": 5.8e9}
    return {
        "size": "quick", "total_s": 100.0, "machine": machine,
        "a": {"methods": ["zeroshot"], "views": 2, "pools": [{"dataset": "d", "train": 5, "val": 2, "test": 9}],
              "needed": 26, "extract_encoded": 26, "extract_decoded": 16, "methods_encoded": 0,
              "methods_decoded": 0, "recorded_encoded": 26, "cells": 3, "trained": 3},
        "b": [{"model": "ViT-B-32", "image_size": 224, "images": 8, "batch_size": 4, "raw_ips": 10.0,
               "ours_ips": 9.5, "ratio": 0.95}],
        "c": [{"method": "CLIP-Adapter (real class)", "steps": "3 epochs", "images": 4, "extract_s": 1.0,
               "cached_encoded": 12, "cached_train_s": 0.5, "reencode_s": 6.0, "reencode_encoded": 12,
               "n_steps": 3, "reference_steps": 6}],
        "d": {"stages": 10, "wall_s": 50.0, "stage_s": 50.0 * (1 - share), "bookkeeping_s": 50.0 * share,
              "share": share, "per_stage_s": 5.0 * share, "noop_s": 3.0, "noop_ran": 0, "methods": ["zeroshot"],
              "toy_suite_stages": 40, "import_s": 2.0, "by_kind": bench.stage_kinds([("-m stages.train --x", 4.0)])},
        "e": [{"images": 10, "decoded": 10, "seconds": 1.0, "peak_rss_mb": 800.0, "decoded_if_held_mb": 2.0},
              {"images": 40, "decoded": 40, "seconds": 4.0, "peak_rss_mb": 804.0, "decoded_if_held_mb": 8.0}],
        "f": bench.gpu_estimate(flops),
    }


@pytest.mark.parametrize("share, verdict", [(0.05, "Goal on this reduced run: met"),
                                            (0.2, "Goal on this reduced run: **not met**")])
def test_render_has_every_section_and_honest_verdicts(share, verdict):
    text = bench.render(_fake_result(share))
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
    bb = bench.random_backbone("clipbench-toy-vit", "toy_vit")
    paths = bench.write_jpegs(tmp_path, 7, side=48)
    views = features.ViewSpec(2, (0.5, 1.0), 0)
    counts = [features.EncodeCounter(), features.EncodeCounter()]
    seq, ovl = (features.encode_paths(bb, tmp_path, paths, 3, views, c, overlap=o)
                for c, o in zip(counts, (False, True), strict=True))
    for key in ("plain", "pre", "views", "pre_views"):
        assert torch.equal(getattr(seq, key), getattr(ovl, key))
    assert seq.views.shape[:2] == (2, 7)
    assert counts[0] == counts[1] == features.EncodeCounter(decoded=7, encoded=7 * 3)
