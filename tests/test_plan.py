"""``clipbench plan``: one row per method, cell counts from the protocol registry, totals that add up."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from clipbench import plan
from clipbench.cli import main
from clipbench.config import SuiteConfig
from clipbench.methods import METHODS
from clipbench.protocols import eval_cells, training_cells
from clipbench.suites import smoke_params
from clipbench.typed import parse

from conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny() -> tuple[SuiteConfig, plan.Plan]:
    names = list(METHODS.names())
    cfg = parse(SuiteConfig, tiny_params(methods=names, method_params=smoke_params(names)), "test params")
    return cfg, plan.suite_plan(cfg)


def test_one_row_per_method_with_the_registry_cell_counts(tiny):
    cfg, p = tiny
    assert [r.method for r in p.methods] == list(METHODS.names())
    trained = sum(len(training_cells(cfg, d)) for d in cfg.datasets)
    for row in p.methods:
        assert (row.eval_cells, row.train_cells) == (len(eval_cells(cfg)), trained)


def test_totals_are_the_sums_of_the_rows(tiny):
    _, p = tiny
    t = p.totals()
    for key, value in (("train_cells", "train_cells"), ("eval_cells", "eval_cells"), ("flops", "flops")):
        rows = sum(getattr(r, value) for r in p.methods) + (sum(s.flops for s in p.shared) if key == "flops" else 0)
        assert math.isclose(t[key], rows)
    assert math.isclose(t["state_bytes"], sum(r.state_bytes for r in p.methods))
    assert t["peak_bytes"] == max(r.peak_bytes for r in p.methods)
    assert sum(p.stages.values()) > len(p.methods)


def test_encoder_training_costs_more_than_cached_features(tiny):
    _, p = tiny
    rows = {r.method: r for r in p.methods}
    assert rows["zeroshot"].flops == 0 and rows["linear_probe"].work.image_passes == 0
    assert rows["coop"].work.prompts > 0 and rows["coop"].work.images == 0
    assert rows["cocoop"].work.prompts > rows["coop"].work.prompts  # per image, not per step
    assert rows["clipfit"].work.images > 0 and rows["clip_cite"].work.frozen_images > 0
    assert rows["clip_cite"].peak_bytes > rows["clipfit"].peak_bytes  # AdamW state of every parameter


def test_clip_cite_state_matches_the_compressed_delta_bound():
    """The plan's CLIP-CITE cell on ViT-B/16 with ImageNet's classes stays within the documented 150 MB."""
    arch = plan.architecture("vitb16_openai")
    cls = METHODS.get("clip_cite")
    shape = plan.CellShape("imagenet", 16, 1000, 16000, 10)
    size = cls.state_bytes(cls.Config(), shape, arch)
    assert 100e6 < size <= 150e6


def test_cli_prints_the_paper_suite_plan():
    result = CliRunner().invoke(main, ["plan", "--params", str(ROOT / "configs" / "paper.yaml")])
    assert result.exit_code == 0, result.output
    for name in METHODS.names():
        assert f"| {name} |" in result.output
    assert "**total**" in result.output and "GPU-hours" in result.output


def test_measuring_an_architecture_warns_about_no_missing_weights(caplog):
    """The meta-device model has no weights on purpose: open_clip's "initialized randomly" warning would mislead."""
    plan.architecture.cache_clear()
    with caplog.at_level("WARNING"):
        plan.architecture("toy_vit")
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
    assert logging.getLogger().filters == []  # the filter is gone afterwards
