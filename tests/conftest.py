"""Shared fixtures: a miniature toy suite (few classes, few images) and a random-init tiny backbone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clipbench.backbones import get_backbone, import_open_clip
from clipbench.backbones.spec import save_prepared
from clipbench.config import SuiteConfig
from clipbench.data import LabelSpace
from clipbench.data.toy import suite
from clipbench.layout import Layout
from clipbench.methods import FeatureSet, FitTask
from clipbench.suites import Reduction, reduced_params
from clipbench.typed import parse

SOURCES = ["toy_objects", "toy_textures"]
TARGETS = ["toy_objects_sketch"]


def tiny_params(**overrides) -> dict:
    """A two-source toy suite reduced by :func:`clipbench.suites.reduced_params` (few-shot on the first source)."""
    base = {
        "suite": "test",
        "backbones": ["toy_vit"],
        "datasets": list(SOURCES),
        "targets": list(TARGETS),
        "methods": ["zeroshot", "linear_probe", "clip_adapter"],
        "method_params": {"clip_adapter": {"epochs": 5}, "linear_probe": {"bisection_steps": 2}},
        "features": {"batch_size": 64},
        "tracking": {"enabled": False},
    }
    params = reduced_params(
        base, Reduction(sources=2, few_shot_sources=1, toy_pretrain={"images": 64, "steps": 2, "batch_size": 16})
    )
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


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its schema created once (creating the tables takes ~8 s per store)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path, _empty_mlflow_db) -> str:
    """A fresh, empty MLflow sqlite store in ``tmp_path`` (a copy of the session's template)."""
    import shutil

    path = tmp_path / "mlflow.db"
    shutil.copy(_empty_mlflow_db, path)
    return f"sqlite:///{path}"


def make_project(tmp_path: Path) -> tuple[SuiteConfig, Layout, Path]:
    """A miniature project: suite config, layout rooted in tmp_path, data_root, and a prepared random backbone."""
    data_root = tmp_path / "data" / "raw"
    cfg = parse(SuiteConfig, tiny_params(data_root=str(data_root)), "test params")
    layout = Layout(tmp_path)
    open_clip = import_open_clip()
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


def _toy_images(root: Path, n_classes: int, per_class: int, split: str) -> tuple[list[str], list[int], list[str]]:
    """Render ``per_class`` toy_objects images for the first ``n_classes`` classes as PNG files under ``root``."""
    from PIL import Image

    defn = suite.TOY_DATASETS["toy_objects"]
    paths, labels = [], []
    for label, cls in enumerate(defn.classes[:n_classes]):
        for i in range(per_class):
            rng = suite.image_rng(defn.name, split, label, i)
            rel = f"{cls.class_id}/{split}_{i}.png"
            (root / cls.class_id).mkdir(parents=True, exist_ok=True)
            Image.fromarray(suite.world.render(defn.scene(cls, rng), rng)).save(root / rel)
            paths.append(rel)
            labels.append(label)
    return paths, labels, [c.classname for c in defn.classes[:n_classes]]


def encoder_task(root: Path, n_classes: int = 4, shots: int = 2, views: int = 2, seed: int = 1) -> dict:
    """A tiny task for methods that use the backbone: random-init ``toy_vit``, rendered images on disk, and the
    projected / pre-projection features a pipeline would cache. Returns ``task``, ``backbone`` and per-input
    evaluation data ``x`` (``{"features", "pre_proj", "images"}``) with ``labels`` for the val images."""
    from clipbench.backbones.spec import Backbone
    from clipbench.data.images import augmented_view, to_normalised_tensor, view_rng
    from clipbench.data.imageset import ImageSet

    open_clip = import_open_clip()
    spec = get_backbone("toy_vit")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(spec.model)
    backbone = Backbone(spec, model.eval(), preprocess, open_clip.get_tokenizer(spec.model), "random-init")
    train_paths, train_labels, names = _toy_images(root, n_classes, shots, "train")
    val_paths, val_labels, _ = _toy_images(root, n_classes, 2, "val")
    train = ImageSet(root, tuple(train_paths), torch.tensor(train_labels))
    val = ImageSet(root, tuple(val_paths), torch.tensor(val_labels))
    mean, std = model.visual.image_mean, model.visual.image_std

    def encode(images: ImageSet, transform) -> tuple[torch.Tensor, torch.Tensor]:
        return backbone.encode_images_with_pre(images.pixels(range(len(images)), transform))

    train_pre, train_plain = encode(train, preprocess)
    val_pre, val_plain = encode(val, preprocess)

    def view(v: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack(
            [
                to_normalised_tensor(
                    augmented_view(train.image(i), backbone.image_size, (0.5, 1.0), view_rng(path, v, 0)), mean, std
                )
                for i, path in enumerate(train_paths)
            ]
        )
        return backbone.encode_images_with_pre(pixels)

    view_feats = [view(v) for v in range(views)]
    space = LabelSpace("toy_objects", tuple(f"c{i}" for i in range(n_classes)), tuple(names), ("a photo of a {}.",))
    text = backbone.text_classifier(space.prompts())
    common = {
        "text_weights": text,
        "logit_scale": backbone.logit_scale,
        "shots": shots,
        "seed": seed,
        "dataset": "toy_objects",
        "backbone": backbone,
        "train_images": train,
        "val_images": val,
    }
    tasks = {
        "features": FitTask(
            space,
            FeatureSet(train_plain, train.labels, torch.stack([f[1] for f in view_feats])),
            FeatureSet(val_plain, val.labels),
            **common,
        ),
        "pre_proj": FitTask(
            space,
            FeatureSet(train_pre, train.labels, torch.stack([f[0] for f in view_feats])),
            FeatureSet(val_pre, val.labels),
            **common,
        ),
    }
    tasks["images"] = tasks["features"]
    x = {"features": val_plain, "pre_proj": val_pre, "images": val.pixels(range(len(val)), preprocess)}
    return {"tasks": tasks, "backbone": backbone, "x": x, "labels": val.labels, "space": space}


def every_method_suite(tmp_path: Path, device: str):
    """A miniature project of every registered method (smoke settings) on ``device``, downloaded and split."""
    import dataclasses

    from clipbench.methods import METHODS
    from clipbench.pipeline import download, split
    from clipbench.suites import smoke_params

    _, layout, data_root = make_project(tmp_path)
    names = list(METHODS.names())
    params = tiny_params(data_root=str(data_root), methods=names)
    params["method_params"] = smoke_params(names)
    cfg = parse(SuiteConfig, params, "test")
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, device=device))
    for d in cfg.all_datasets():
        download.run(dataset=d, data_root=data_root, layout=layout)
    for d in cfg.datasets:
        split.run(dataset=d, cfg=cfg, layout=layout)
    return cfg, layout, data_root


def run_every_stage(cfg: SuiteConfig, layout: Layout, data_root: Path) -> None:
    """Extract, then train (each cell trains) and evaluate every method of ``cfg``."""
    from clipbench.pipeline import evaluate, extract, train

    for d in cfg.all_datasets():
        extract.run(
            backbone="toy_vit", dataset=d, cfg=cfg, layout=layout, data_root=data_root, test_only=d not in cfg.datasets
        )
    for name in cfg.methods:
        for d in cfg.datasets:
            assert train.run(backbone="toy_vit", method=name, dataset=d, cfg=cfg, layout=layout)["trained"] > 0
        evaluate.run(backbone="toy_vit", method=name, cfg=cfg, layout=layout)
