"""Per-method view recipes: which (image, view) pairs are cached, how cells read them, and whether the cached
views follow each reference's torchvision transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from clipbench import views
from clipbench.cells import TrainCell, TrainUnit
from clipbench.config import SuiteConfig, load_suite
from clipbench.data.base import Record
from clipbench.data.images import ViewRecipe, augmented_view, view_rng
from clipbench.data.kshot import KShotSplit
from clipbench.errors import DataError
from clipbench.features import FeatureDir
from clipbench.methods import METHODS, resolve_config
from clipbench.methods.base import ViewNeed
from clipbench.protocols import training_units
from clipbench.typed import parse

from conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]
PAPER = load_suite(ROOT / "configs" / "paper.yaml")


def _suite(methods: dict[str, dict], max_views: int | None = None) -> SuiteConfig:
    params = tiny_params(methods=list(methods), method_params=methods)
    params["features"] = {**params["features"], "max_views": max_views}
    return parse(SuiteConfig, params, "test")


def test_paper_methods_read_their_references_views():
    """One fresh view per epoch (Dassl-trained methods) or step (ProLIP), Tip-Adapter's 10 per key (+ one per
    Tip-Adapter-F epoch); crops of 8-100% for Dassl, 50-100% for Tip-Adapter and ProLIP; flip; drawn per seed."""
    expected = {
        "coop": ((0.08, 1.0), 200, False),
        "cocoop": ((0.08, 1.0), 10, False),
        "clip_adapter": ((0.08, 1.0), 200, False),
        "tip_adapter": ((0.5, 1.0), 10, False),
        "tip_adapter_f": ((0.5, 1.0), 30, False),
        "prolip": ((0.5, 1.0), 300, True),
    }
    cell = TrainCell("caltech101", "all", 16, 1)
    for name in PAPER.methods:
        unit = TrainUnit(cell, config=PAPER.method_config(name))
        need = views.unit_need(PAPER, name, unit)
        if name not in expected:
            assert need is None, name  # zero-shot, the linear probe (plain features), the image-level methods
            continue
        scale, count, pre = expected[name]
        assert need == ViewNeed(ViewRecipe(scale), count, pre), name
        assert need.recipe.flip and need.recipe.seeded and need.recipe.interpolation == "bicubic"


def test_methods_with_one_recipe_share_a_group_per_seed_holding_the_largest_count():
    cfg = _suite({"clip_adapter": {"epochs": 7, "crop_scale": [0.5, 1.0]}, "tip_adapter": {"augment_views": 3}})
    groups = views.view_groups(cfg, cfg.datasets[0])
    seeds = sorted({u.cell.seed for u in training_units(cfg, "tip_adapter", cfg.datasets[0])})
    assert [g.name for g in groups] == [f"rrc0.5-1-flip-bicubic/s{s}" for s in seeds]  # one recipe, per seed
    assert all(set(g.reads.values()) == {7} for g in groups)  # max(7 epochs, 3 key views)
    assert not any(g.pre for g in groups)
    split = _suite({"clip_adapter": {"epochs": 7}, "tip_adapter": {"augment_views": 3}})
    names = {g.name.split("/")[0] for g in views.view_groups(split, split.datasets[0])}
    assert names == {"rrc0.08-1-flip-bicubic", "rrc0.5-1-flip-bicubic"}  # different recipes: separate views


def test_max_views_caps_every_read_and_prolip_groups_keep_pre_projection_views():
    cfg = _suite({"prolip": {"steps": 40}, "clip_adapter": {"epochs": 5}}, max_views=4)
    groups = views.view_groups(cfg, cfg.datasets[0])
    assert groups and all(set(g.reads.values()) <= {4} for g in groups)
    assert {g.name.split("/")[0]: g.pre for g in groups} == {
        "rrc0.08-1-flip-bicubic": False,
        "rrc0.5-1-flip-bicubic": True,
    }


def _record(path: str, label: int) -> Record:
    return Record(path, label, f"c{label}")


def test_image_counts_take_each_images_largest_read_and_only_base_classes_for_base_cells():
    group = views.ViewGroup(ViewRecipe((0.5, 1.0)), 1)
    group.reads = {(2, 1, "all"): 3, (4, 1, "base"): 8}
    two = KShotSplit("d", 2, 1, tuple(_record(f"a{i}", i % 4) for i in range(8)), ())
    four = KShotSplit("d", 4, 1, tuple(_record(f"a{i}", i % 4) for i in range(0, 16, 2)), ())
    counts = group.image_counts({(2, 1): two, (4, 1): four})
    # base classes of the 4-shot list: labels 0 and 2 of {0, 2} -> the first half, label 0 only
    assert counts == {f"a{i}": 8 if i % 4 == 0 else 3 for i in range(8)} | {"a8": 8, "a12": 8}


def test_views_of_a_cell_are_gathered_per_image_and_short_caches_are_refused():
    index = {"views/g/s1": {"paths": ["x", "y"], "counts": [2, 3]}}
    flat = torch.arange(5, dtype=torch.float32)[:, None].expand(5, 4)  # row r holds r: x -> 0, 1; y -> 2, 3, 4
    fit = FeatureDir({"views/g/s1": flat}, index, {})
    got = fit.views("g/s1", 2, ["y", "x"])
    assert got.shape == (2, 2, 4) and got[:, :, 0].tolist() == [[2.0, 0.0], [3.0, 1.0]]
    with pytest.raises(DataError, match="fewer than 3 cached views"):
        fit.views("g/s1", 3, ["x"])
    with pytest.raises(DataError, match="no pre_views/g/s1 views"):
        fit.views("g/s1", 1, ["x"], pre=True)


def test_view_streams_differ_by_seed_and_recipe_and_repeat_exactly():
    dassl, tip = ViewRecipe((0.08, 1.0)), ViewRecipe((0.5, 1.0))
    draw = [view_rng("img.png", 3, 0, r.stream(s)).random() for r, s in ((dassl, 1), (dassl, 2), (tip, 1))]
    assert len(set(draw)) == 3
    assert view_rng("img.png", 3, 0, dassl.stream(1)).random() == draw[0]
    unseeded = ViewRecipe((0.5, 1.0), seeded=False)
    assert unseeded.stream(1) == unseeded.stream(2)


# --- Faithfulness: cached views against each reference's torchvision transform -------------------------------

WIDTH, HEIGHT, SIDE, DRAWS = 96, 64, 24, 1500


def _coordinate_image() -> Image.Image:
    """Red encodes x, green y, so an output's corners tell which box was cropped and whether it was flipped."""
    x = np.tile(np.linspace(0, 255, WIDTH), (HEIGHT, 1))
    y = np.tile(np.linspace(0, 255, HEIGHT)[:, None], (1, WIDTH))
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).round().astype(np.uint8))


def _measure(out: Image.Image) -> tuple[float, float, bool]:
    """(crop area fraction, log aspect ratio, flipped) read off an output's border pixels."""
    a = np.asarray(out, dtype=np.float64)
    left, right = a[SIDE // 2, 0, 0], a[SIDE // 2, -1, 0]
    top, bottom = a[0, SIDE // 2, 1], a[-1, SIDE // 2, 1]
    w = abs(right - left) / 255 * (WIDTH - 1) * SIDE / (SIDE - 1)
    h = abs(bottom - top) / 255 * (HEIGHT - 1) * SIDE / (SIDE - 1)
    return w * h / (WIDTH * HEIGHT), float(np.log(max(w, 1e-3) / max(h, 1e-3))), bool(right < left)


def _cached(recipe: ViewRecipe) -> list[tuple[float, float, bool]]:
    img = _coordinate_image()
    return [
        _measure(augmented_view(img, SIDE, recipe.scale, view_rng(f"img{i}.png", 0, 0, recipe.stream(1)), recipe.flip))
        for i in range(DRAWS)
    ]


def _torchvision(scale: tuple[float, float]) -> list[tuple[float, float, bool]]:
    from torchvision import transforms as T

    torch.manual_seed(0)
    pipeline = T.Compose(
        [T.RandomResizedCrop(SIDE, scale=scale, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip()]
    )
    img = _coordinate_image()
    return [_measure(pipeline(img)) for _ in range(DRAWS)]


def _paper_recipes() -> dict[str, ViewRecipe]:
    cell = TrainCell("caltech101", "all", 16, 1)
    needs = {m: views.unit_need(PAPER, m, TrainUnit(cell, config=PAPER.method_config(m))) for m in PAPER.methods}
    return {n.recipe.key: n.recipe for n in needs.values() if n is not None}


@pytest.mark.parametrize("key", sorted(_paper_recipes()))
def test_cached_views_follow_the_references_torchvision_transform(key):
    """Crop area, aspect ratio and flip rate of the cache's draws match RandomResizedCrop(scale, bicubic) +
    RandomHorizontalFlip (two-sample KS tests; flip rates within 4 standard errors); a transform of another scale
    is told apart by the same test."""
    recipe = _paper_recipes()[key]
    ours, theirs = np.array(_cached(recipe)), np.array(_torchvision(recipe.scale))
    for column in (0, 1):
        assert stats.ks_2samp(ours[:, column], theirs[:, column]).pvalue > 1e-3, (key, column)
    assert abs(ours[:, 2].mean() - theirs[:, 2].mean()) < 4 * np.sqrt(0.5 / DRAWS)
    other = (0.5, 1.0) if recipe.scale[0] < 0.5 else (0.08, 1.0)
    assert stats.ks_2samp(ours[:, 0], np.array(_torchvision(other))[:, 0]).pvalue < 1e-6  # the test has power


def test_every_view_reading_method_declares_a_need_under_its_defaults():
    """A registered method whose ``fit`` reads ``task.train.view_stack()`` must declare it (else it would train on
    the plain embedding as a single view): every method module that calls it overrides ``view_need``."""
    for name in METHODS.names():
        cls = METHODS.get(name)
        source = Path(__import__(cls.__module__, fromlist=["x"]).__file__).read_text()
        declares = cls.view_need(cls.Config(), "caltech101", 16) is not None
        assert ("view_stack()" in source) == declares, name


def test_tip_adapter_f_reads_one_view_per_epoch_after_the_key_views():
    config = PAPER.method_config("tip_adapter_f")
    for dataset, epochs in (("caltech101", 20), ("eurosat", 100)):  # the reference's EuroSAT setting
        resolved = resolve_config(config, dataset)
        assert METHODS.get("tip_adapter_f").view_need(resolved, dataset, 4).count == 10 + epochs
