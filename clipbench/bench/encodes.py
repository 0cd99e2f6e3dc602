"""(a) Image-encoder inputs of a reduced toy suite against the unique images and (image, view) pairs it needs."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from clipbench.bench.instruments import random_backbone, tally_encoder


@dataclass(frozen=True)
class PoolSize:
    """What one dataset needs encoded: few-shot train pool, the (image, view) pairs of the methods' view recipes
    (:mod:`clipbench.views`), val pool, test split."""

    dataset: str
    train: int
    val: int
    test: int
    views: int = 0

    @property
    def needed(self) -> int:
        return self.train + self.views + self.val + self.test


def needed_encodes(pools: list[PoolSize]) -> int:
    """The floor: each unique image once, plus each (image, view) pair some planned cell reads."""
    return sum(p.needed for p in pools)


def is_frozen_encoder(method: str) -> bool:
    from clipbench.methods import METHODS, Inputs

    return METHODS.get(method).requires is not Inputs.IMAGES


def pool_sizes(cfg, layout) -> list[PoolSize]:
    """Unique images of each dataset's few-shot pools (union over manifests, plus the full validation list under
    ``selection: full_val``) and test split."""
    from clipbench.data.fullval import read_full_val
    from clipbench.data.index import load_index
    from clipbench.data.kshot import read_manifest
    from clipbench.views import view_groups

    pools = []
    for d in cfg.all_datasets():
        test = len(load_index(layout.dataset_index(d)).splits.test)
        manifests = [read_manifest(m) for m in sorted(layout.splits(d).glob("*.json"))] if d in cfg.datasets else []
        by_key = {(m.shots, m.seed): m for m in manifests}
        views = sum(sum(g.image_counts(by_key).values()) for g in view_groups(cfg, d)) if manifests else 0
        pools.append(
            PoolSize(
                d,
                len({r.path for m in manifests for r in m.train}),
                len({r.path for m in manifests for r in m.val} | {r.path for r in read_full_val(layout.splits(d))}),
                test,
                views,
            )
        )
    return pools


def encode_audit(work: Path, params: dict, reuse: Path | None = None) -> dict:
    """Run the suite's stage functions in-process in a fresh project ``work``; count image-tower inputs.

    With ``reuse`` (a project that already ran, e.g. the DVC run of section d), its generated datasets, indexes
    and backbone are reused; features, trained cells and results are always computed afresh here.
    """
    from clipbench.backbones import get_backbone
    from clipbench.backbones.spec import save_prepared
    from clipbench.config import SuiteConfig
    from clipbench.layout import Layout
    from clipbench.pipeline import download, evaluate, extract, split, train
    from clipbench.typed import parse

    data_root = (reuse or work) / "data" / "raw"
    if reuse is not None:
        for sub in (Path("data") / "index", Path("models") / "backbones"):
            if (reuse / sub).is_dir():
                shutil.copytree(reuse / sub, work / sub)
    cfg = parse(SuiteConfig, {**params, "data_root": str(data_root), "tracking": {"enabled": False}}, "bench suite")
    layout, bb = Layout(work), cfg.backbones[0]
    if not (layout.backbone(bb) / "checkpoint.safetensors").is_file():
        save_prepared(get_backbone(bb), random_backbone(get_backbone(bb).model).model, layout.backbone(bb), {})
    for d in cfg.all_datasets():
        if not layout.dataset_index(d).is_file():
            download.run(dataset=d, data_root=data_root, layout=layout)
    for d in cfg.datasets:
        split.run(dataset=d, cfg=cfg, layout=layout)
    frozen = [m for m in cfg.methods if is_frozen_encoder(m)]
    start = time.perf_counter()
    with tally_encoder() as ext:
        for d in cfg.all_datasets():
            extract.run(backbone=bb, dataset=d, cfg=cfg, layout=layout, data_root=data_root, test_only=d in cfg.targets)
    trained = 0
    with tally_encoder() as fit, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. scikit-learn's note on 1-shot sets; not the bench's business
        for m in frozen:
            for d in cfg.datasets:
                trained += train.run(backbone=bb, method=m, dataset=d, cfg=cfg, layout=layout)["trained"]
            evaluate.run(backbone=bb, method=m, cfg=cfg, layout=layout)
    pools = pool_sizes(cfg, layout)
    recorded = _recorded_counts(cfg, layout, bb)
    return {
        "methods": frozen,
        "pools": [dataclasses.asdict(p) for p in pools],
        "needed": needed_encodes(pools),
        "extract_encoded": ext.encoded,
        "extract_decoded": ext.decoded,
        "methods_encoded": fit.encoded,
        "methods_decoded": fit.decoded,
        "recorded_encoded": recorded,
        "seconds": time.perf_counter() - start,
        "cells": _cell_count(cfg, frozen),
        "trained": trained,
    }


def _recorded_counts(cfg, layout, bb: str) -> int:
    """Sum of ``encode_counts.encoded`` that the extract stage stored in the feature directories' meta.json."""
    total = 0
    for d in cfg.all_datasets():
        for sub in ("fit", "test"):
            meta = layout.features(bb, d) / sub / "meta.json"
            if meta.is_file():
                total += json.loads(meta.read_text())["encode_counts"]["encoded"]
    return total


def _cell_count(cfg, methods: list[str]) -> int:
    from clipbench.protocols import training_units

    return sum(len(training_units(cfg, m, d)) for m in methods for d in cfg.datasets)
