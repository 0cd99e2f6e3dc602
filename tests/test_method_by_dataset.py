"""Per-dataset reference settings (``by_dataset``): every resolved value equals what the methods used before the
settings moved into one form, overrides keep their precedence, and bad entries fail at validation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from clipbench.data import DATASETS
from clipbench.errors import ConfigError
from clipbench.methods import resolve_config
from clipbench.methods.clip_cite import ClipCiteConfig
from clipbench.methods.clipfit import ClipFitConfig, clipfit_lambda
from clipbench.methods.tip_adapter import TipAdapter, TipAdapterConfig
from clipbench.methods.tip_adapter_f import TipAdapterFConfig
from clipbench.typed import parse

from conftest import synthetic_task

# Recorded from the code before ``by_dataset`` (REFERENCE_SETTINGS, eurosat_epochs, epochs_by_dataset,
# lambda_few_shot_by_dataset, batch_size_by_dataset), default configs. Per dataset:
# (Tip-Adapter(-F) search_scale, init_alpha, init_beta), Tip-Adapter-F epochs,
# (ClipFit epochs, lambda of an all-class cell, lambda of a base-class cell), CLIP-CITE batch size.
OLD = {
    "imagenet": (((7.0, 3.0), 1.17, 1.0), 20, (10, 2.0, 8.0), 64),
    "caltech101": (((12.0, 5.0), 3.0, 1.0), 20, (100, 2.0, 8.0), 32),
    "oxford_pets": (((7.0, 3.0), 1.17, 1.0), 20, (100, 2.0, 8.0), 32),
    "stanford_cars": (((20.0, 10.0), 3.0, 1.0), 20, (100, 2.0, 8.0), 32),
    "oxford_flowers": (((50.0, 50.0), 10.0, 1.0), 20, (100, 2.0, 8.0), 32),
    "food101": (((10.0, 10.0), 1.17, 1.0), 20, (10, 2.0, 8.0), 32),
    "fgvc_aircraft": (((30.0, 30.0), 5.0, 1.0), 20, (100, 2.0, 8.0), 32),
    "sun397": (((12.0, 10.0), 1.17, 1.0), 20, (100, 8.0, 8.0), 32),
    "dtd": (((13.0, 13.0), 2.0, 1.0), 20, (100, 8.0, 8.0), 32),
    "eurosat": (((12.0, 10.0), 2.0, 1.0), 100, (100, 2.0, 8.0), 16),
    "ucf101": (((7.0, 3.0), 3.0, 1.0), 20, (100, 2.0, 8.0), 32),
    "toy_objects": (((7.0, 3.0), 1.17, 1.0), 20, (100, 2.0, 8.0), 32),
    "toy_textures": (((7.0, 3.0), 1.17, 1.0), 20, (100, 2.0, 8.0), 32),
    "toy_scenes": (((7.0, 3.0), 1.17, 1.0), 20, (100, 2.0, 8.0), 32),
    "toy_objects_sketch": (((7.0, 3.0), 1.17, 1.0), 20, (100, 2.0, 8.0), 32),
    "toy_objects_noisy": (((7.0, 3.0), 1.17, 1.0), 20, (100, 2.0, 8.0), 32),
    "toy_objects_textured": (((7.0, 3.0), 1.17, 1.0), 20, (100, 2.0, 8.0), 32),
    "toy_objects_pixelated": (((7.0, 3.0), 1.17, 1.0), 20, (100, 2.0, 8.0), 32),
}


def tip_settings(cfg) -> tuple:
    return cfg.search_scale, cfg.init_alpha, cfg.init_beta


@pytest.mark.parametrize("dataset", OLD)
def test_resolved_values_equal_the_old_per_dataset_settings(dataset):
    assert dataset in DATASETS
    tip, tip_f_epochs, clipfit, clip_cite_batch = OLD[dataset]
    assert tip_settings(resolve_config(TipAdapterConfig(), dataset)) == tip
    tip_f = resolve_config(TipAdapterFConfig(), dataset)
    assert (tip_settings(tip_f), tip_f.epochs) == (tip, tip_f_epochs)
    fit = resolve_config(ClipFitConfig(), dataset)
    assert (fit.epochs, clipfit_lambda(fit, "all"), clipfit_lambda(fit, "base")) == clipfit
    assert resolve_config(ClipCiteConfig(), dataset).batch_size == clip_cite_batch


@pytest.mark.parametrize(("dataset", "epochs"), [("toy_objects", 3), ("food101", 10), ("imagenet", 10)])
def test_top_level_values_reach_datasets_without_an_entry_and_entries_win(dataset, epochs):
    """As before: a suite override (the toy suite's ClipFit ``epochs: 3``) applies where no entry exists."""
    assert resolve_config(ClipFitConfig(epochs=3), dataset).epochs == epochs


@pytest.mark.parametrize("config", [TipAdapterConfig(), TipAdapterFConfig(), ClipFitConfig(), ClipCiteConfig()])
def test_resolving_twice_changes_nothing(config):
    once = resolve_config(config, "eurosat")
    assert resolve_config(once, "eurosat") == once and not once.by_dataset


def test_tip_adapter_fit_uses_its_datasets_initial_values():
    method = TipAdapter(TipAdapterConfig(search=False))
    info = method.fit(replace(synthetic_task(), dataset="oxford_flowers"))
    assert (info["alpha"], info["beta"]) == (10.0, 1.0)


@pytest.mark.parametrize(
    ("config", "entry", "message"),
    [
        (ClipFitConfig, {"eurosatt": {"epochs": 5}}, "unknown dataset 'eurosatt'"),
        (ClipCiteConfig, {"eurosat": {"batch_sise": 8}}, "by_dataset.eurosat: unknown key"),
        (TipAdapterFConfig, {"eurosat": {"epochs": 0}}, "by_dataset.eurosat: epochs and batch_size must be positive"),
        (TipAdapterConfig, {"dtd": {"by_dataset": {}}}, "cannot be nested"),
    ],
)
def test_bad_entries_fail_at_validation_naming_the_entry(config, entry, message):
    with pytest.raises(ConfigError, match=message):
        parse(config, {"by_dataset": entry}, "method_params.m")
