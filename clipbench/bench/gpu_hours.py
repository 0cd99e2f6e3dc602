"""(f) GPU-hours of the paper suite from measured FLOPs (:mod:`clipbench.compute_plan`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from clipbench import compute_plan
from clipbench.config import SuiteConfig


@dataclass(frozen=True)
class GpuAssumption:
    name: str = "NVIDIA A100 (bf16 dense peak 312 TFLOP/s)"
    peak_tflops: float = 312.0
    utilisation: float = 0.4

    @property
    def sustained(self) -> float:
        return self.peak_tflops * self.utilisation


def measured_flops(model_name: str = "ViT-B-16") -> dict:
    """Forward FLOPs (2 x MAC) of one image and one 77-token prompt, counted on a random-weight model.

    Counted with autograd enabled: under ``inference_mode`` PyTorch's fused attention fast path hides the
    attention matmuls from ``FlopCounterMode``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from clipbench.backbones.registry import import_open_clip, quiet_random_init

    open_clip = import_open_clip()
    with quiet_random_init():  # FLOPs only: random weights
        model = open_clip.create_model(model_name).eval()
    size = model.visual.image_size
    side = size[0] if isinstance(size, (tuple, list)) else size
    counts = {}
    for key, run in (
        ("image", lambda: model.encode_image(torch.randn(1, 3, side, side))),
        ("text", lambda: model.encode_text(open_clip.get_tokenizer(model_name)(["a photo of a cat."]))),
    ):
        counter = FlopCounterMode(display=False)
        with counter:
            run()
        counts[key] = float(counter.get_total_flops())
    return {"model": model_name, "image_size": side, "image_flops": counts["image"], "text_flops": counts["text"]}


def gpu_estimate(flops: dict, suite: SuiteConfig, gpu: GpuAssumption = GpuAssumption()) -> dict:
    """GPU-hours of ``suite`` (the paper suite: ``configs/paper.yaml``) from per-image / per-prompt FLOPs."""
    protocols = compute_plan.suite_protocols(suite)
    methods = compute_plan.image_level_methods(suite)
    f_img, f_txt = flops["image_flops"], flops["text_flops"]
    rows = []
    images = compute_plan.extraction_images(protocols)
    total = sum(images.values())
    item = f"feature extraction, {images['views']:,} augmented views (the frozen-encoder methods' view recipes)"
    rows.append({"item": item, "images": total, "flops": total * f_img})
    for m in methods:
        fl = compute_plan.image_level_flops(m, protocols, f_img, f_txt)
        rows.append(
            {
                "item": f"{m.name} training (image {fl['train_image']:.2e}, text {fl['train_text']:.2e} FLOPs)",
                "images": None,
                "flops": fl["train"],
            }
        )
        rows.append(
            {"item": f"{m.name} evaluation (own encoder per cell)", "images": fl["eval_images"], "flops": fl["eval"]}
        )
    reenc = compute_plan.reencoding_flops(200, protocols, f_img)
    rows.append(
        {
            "item": "for contrast: CLIP-Adapter re-encoding 200 epochs (reference harness)",
            "images": None,
            "flops": reenc,
        }
    )
    for r in rows:
        r["gpu_hours"] = compute_plan.gpu_hours(r["flops"], gpu.sustained)
    return {
        "flops": flops,
        "gpu": dataclasses.asdict(gpu),
        "sustained_tflops": gpu.sustained,
        "rows": rows,
        "cells_per_method": len(compute_plan.training_cells(protocols)),
        "views": protocols.view_pairs,
        "methods": [m.name for m in methods],
        "sources": len(protocols.sources),
        "targets": len(protocols.targets),
    }
