"""Shared fixtures: a miniature toy suite (few classes, few images) and a random-init tiny backbone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clipbench.backbones import get_backbone
from clipbench.backbones.spec import save_prepared
from clipbench.config import SuiteConfig
from clipbench.data import LabelSpace
from clipbench.data.toy import suite
from clipbench.layout import Layout
from clipbench.methods import FeatureSet, FitTask
from clipbench.typed import parse

SOURCES = ["toy_objects", "toy_textures"]
TARGETS = ["toy_objects_sketch"]


def tiny_params(**overrides) -> dict:
    params = {
        "suite": "test",
        "backbones": ["toy_vit"],
        "datasets": list(SOURCES),
        "targets": list(TARGETS),
        "methods": ["zeroshot", "linear_probe", "clip_adapter"],
        "protocols": {
            "few_shot": {"datasets": ["toy_objects"], "shots": [1, 4], "seeds": [1, 2]},
            "base2new": {"datasets": ["toy_objects", "toy_textures"], "shots": 4, "seeds": [1]},
            "cross_dataset": {"source": "toy_objects", "targets": ["toy_textures"], "shots": 4, "seeds": [1]},
            "domain_generalization": {"source": "toy_objects", "targets": ["toy_objects_sketch"], "shots": 4,
                                      "seeds": [1]},
        },
        "method_params": {"clip_adapter": {"epochs": 5}, "linear_probe": {"bisection_steps": 2}},
        "features": {"views": 2, "batch_size": 64},
        "toy_pretrain": {"images": 64, "steps": 2, "batch_size": 16},
        "tracking": {"enabled": False},
    }
    params.update(overrides)
    return params


def _shrink(monkeypatch) -> None:
    for name, defn in list(suite.TOY_DATASETS.items()):
        counts = (8, 4, 5) if defn.per_class[0] else (0, 0, 5)
        monkeypatch.setitem(suite.TOY_DATASETS, name, replace(defn, classes=defn.classes[:6], per_class=counts))


@pytest.fixture
def small_toy(monkeypatch):
    """Shrink every toy dataset to 6 classes and a handful of images per split."""
    _shrink(monkeypatch)


@pytest.fixture(scope="module")
def small_toy_module():
    with pytest.MonkeyPatch.context() as mp:
        _shrink(mp)
        yield


def make_project(tmp_path: Path) -> tuple[SuiteConfig, Layout, Path]:
    """A miniature project: suite config, layout rooted in tmp_path, data_root, and a prepared random backbone."""
    data_root = tmp_path / "data" / "raw"
    cfg = parse(SuiteConfig, tiny_params(data_root=str(data_root)), "test params")
    layout = Layout(tmp_path)
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(get_backbone("toy_vit").model)
    save_prepared(get_backbone("toy_vit"), model, layout.backbone("toy_vit"), {"note": "random init for tests"})
    return cfg, layout, data_root


@pytest.fixture
def project(tmp_path, small_toy) -> tuple[SuiteConfig, Layout, Path]:
    return make_project(tmp_path)


def synthetic_task(n_classes: int = 5, shots: int = 4, dim: int = 16, views: int = 3, seed: int = 0) -> FitTask:
    """A separable feature-level task with class-dependent means."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_classes, dim, generator=g) * 3
    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n_classes).repeat_interleave(k)
        return means[labels] + torch.randn(len(labels), dim, generator=g), labels
    x, y = draw(shots)
    vx = torch.stack([x + 0.1 * torch.randn(x.shape, generator=g) for _ in range(views)])
    xv, yv = draw(2)
    ids = tuple(f"c{i}" for i in range(n_classes))
    space = LabelSpace("synthetic", ids, tuple(f"class {i}" for i in range(n_classes)), ("a photo of a {}.",))
    text = torch.nn.functional.normalize(means + 0.5 * torch.randn(means.shape, generator=g), dim=-1)
    return FitTask(space, FeatureSet(x, y, vx), FeatureSet(xv, yv), text, 10.0, shots, 1)
