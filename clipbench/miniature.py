"""A miniature paper-shaped suite: the real ViT-B/16 architecture (random weights), CoOp-layout data, every
registered method, one seed, one or two training steps each, run through the real stage functions in-process
(no DVC, no MLflow).

The caller provides ``data_root`` in the CoOp layout (the tests' ``coop_fixtures.write_coop_root`` writes one
with every real class name, ImageNet's 1,000 included). The backbone is saved as a prepared ``vitb16_openai``
through the same route as the toy one (:func:`clipbench.backbones.spec.save_prepared`), so extraction, training
and evaluation load, verify and place it exactly as they would the OpenAI weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from clipbench.backbones import get_backbone, import_open_clip, quiet_random_init
from clipbench.backbones.spec import save_prepared
from clipbench.config import SuiteConfig
from clipbench.layout import Layout
from clipbench.methods import METHODS
from clipbench.pipeline import aggregate, download, evaluate, extract, split, train
from clipbench.suites import capped_method_params, smoke_params
from clipbench.typed import parse

BACKBONE = "vitb16_openai"
CAPS = {"epochs": 1, "steps": 2, "iterations": 2, "bisection_steps": 1}  # one or two optimiser steps per method
TINY_BATCH = {"batch_size": 2}  # the encoder-level methods: two images per step


def miniature_params(data_root: Path, sources: list[str], targets: list[str], device: str = "auto") -> dict:
    """The suite: few-shot (1 shot) and base-to-new on ``sources``; transfer from the first source to the others
    and domain generalization to ``targets`` when given; every registered method at its smoke settings, capped."""
    names = list(METHODS.names())
    encoder = {n: dict(TINY_BATCH) for n in ("clipfit", "clip_cite", "coop", "cocoop")}
    protocols: dict = {
        "few_shot": {"datasets": sources, "shots": [1], "seeds": [1]},
        "base2new": {"datasets": sources, "shots": 1, "seeds": [1]},
    }
    if len(sources) > 1:
        protocols["cross_dataset"] = {"source": sources[0], "targets": sources[1:], "shots": 1, "seeds": [1]}
    if targets:
        protocols["domain_generalization"] = {"source": sources[0], "targets": targets, "shots": 1, "seeds": [1]}
    params = {
        "suite": "miniature",
        "backbones": [BACKBONE],
        "datasets": sources,
        "targets": targets,
        "methods": names,
        "method_params": smoke_params(names, encoder),
        "protocols": protocols,
        "data_root": str(data_root),
        "data_counts": "classes",
        "image_check": "off",
        "features": {"max_views": 1, "batch_size": 64},
        "tracking": {"enabled": False},
        "runtime": {"device": device, "batch_size": 64},
    }
    return capped_method_params(params, CAPS)


def save_random_vitb16(layout: Layout) -> Path:
    """ViT-B/16 (open_clip ``ViT-B-16``, QuickGELU as the OpenAI weights), random weights, as a prepared backbone."""
    spec = get_backbone(BACKBONE)
    torch.manual_seed(0)
    with quiet_random_init():  # random weights are the point
        model = import_open_clip().create_model(spec.model, force_quick_gelu=spec.force_quick_gelu)
    return save_prepared(spec, model, layout.backbone(BACKBONE), {"note": "random weights (miniature suite)"})


def run(work: Path, data_root: Path, sources: list[str], targets: list[str], device: str = "auto", log=print) -> dict:
    """Run the miniature suite under ``work``; return seconds per stage kind and the result count."""
    layout, seconds = Layout(work), {}
    cfg = parse(SuiteConfig, miniature_params(data_root, sources, targets, device), "miniature suite")

    def timed(kind: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds[kind] = seconds.get(kind, 0.0) + time.perf_counter() - start
        return out

    timed("backbone", save_random_vitb16, layout)
    for d in cfg.all_datasets():
        timed(
            "download", download.run, dataset=d, data_root=data_root, layout=layout, counts="classes", image_check="off"
        )
    for d in cfg.datasets:
        timed("split", split.run, dataset=d, cfg=cfg, layout=layout)
    for d in cfg.all_datasets():
        log(f"miniature: extract {d}")
        test_only = d not in cfg.datasets
        kw = {"backbone": BACKBONE, "dataset": d, "cfg": cfg, "layout": layout, "data_root": data_root}
        timed("extract", extract.run, **kw, test_only=test_only)
    for name in cfg.methods:
        log(f"miniature: train and evaluate {name}")
        for d in cfg.datasets:
            timed(f"train {name}", train.run, backbone=BACKBONE, method=name, dataset=d, cfg=cfg, layout=layout)
        timed(f"evaluate {name}", evaluate.run, backbone=BACKBONE, method=name, cfg=cfg, layout=layout)
    timed("aggregate", aggregate.run, cfg=cfg, layout=layout)
    results = sum(1 for _ in layout.root.glob("results/*/*/cells/*/cell.json"))
    return {"seconds": seconds, "results": results, "device": str(cfg.runtime.torch_device())}
