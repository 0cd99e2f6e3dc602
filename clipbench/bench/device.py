"""Measurements on the accelerator (``clipbench bench --device cuda``), ViT-B/16 at 224 px with random weights.

* extraction images/s of the real stage path (``features.encode_paths``: decode, transform, encode) against a raw
  ``encode_image`` loop over pre-decoded tensors already on the device;
* seconds of one back-propagating image batch and one back-propagating prompt batch (the two passes every
  encoder-level training step is made of), with the peak device memory of each, under the runtime's precision;
* per method, the seconds of one training step at the paper suite's settings (its largest step: the step images
  and prompts of :mod:`clipbench.plan`), and the plan's GPU-hours recomputed from these measured rates.

What this does not measure: a method's own ``fit`` loop (optimiser, losses, data loading); the step estimate is
the encoder work of the step at the measured rates.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from clipbench import features
from clipbench.backbones.spec import Backbone
from clipbench.bench.instruments import random_backbone, write_jpegs
from clipbench.plan import Plan

MODEL = "ViT-B-16"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn, device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _peak(fn, device: torch.device) -> float:
    if device.type != "cuda":
        fn()
        return float("nan")
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    return float(torch.cuda.max_memory_allocated(device))


def on_device(device: torch.device, precision: str) -> Backbone:
    bb = random_backbone(MODEL)
    bb.model.to(device)
    return dataclasses.replace(bb, precision=precision)


def extraction(bb: Backbone, work: Path, images: int, batch: int, workers: int = 0, repeats: int = 2) -> dict:
    """Images/s of ``encode_paths`` (in-process and with ``workers`` decode processes) against ``encode_image`` on
    pre-decoded tensors on the device."""
    from clipbench.data.images import open_rgb

    paths = write_jpegs(work, images, 256)
    device = bb.device
    pixels = torch.stack([bb.preprocess(open_rgb(work / p)) for p in paths]).to(device)

    def raw() -> None:
        with torch.inference_mode(), bb.autocast():
            for chunk in pixels.split(batch):
                bb.model.encode_image(chunk)

    def ours(n: int = 0) -> None:
        features.encode_paths(bb, work, paths, batch, workers=n)

    def device_decoded() -> None:
        _encode_device_decoded(bb, work, paths, batch)

    raw(), ours(), ours(workers), device_decoded()
    t_raw, t_ours = _best(raw, device, repeats), _best(ours, device, repeats)
    t_workers = _best(lambda: ours(workers), device, repeats)
    return {
        "images": images,
        "batch": batch,
        "workers": workers,
        "raw_ips": images / t_raw,
        "ours_ips": images / t_ours,
        "workers_ips": images / t_workers,
        "device_decode_ips": images / _best(device_decoded, device, repeats),
    }


def _encode_device_decoded(bb: Backbone, work: Path, paths: list[str], batch: int) -> None:
    """The alternative to decode workers: ``torchvision.io.decode_jpeg`` on the encoding device (nvJPEG on CUDA),
    then resize, centre crop and normalise there (measured against the loader, not assumed faster)."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.io import decode_jpeg, read_file

    from clipbench.data.loader import pixel_stats, to_model_input

    side, device = bb.image_size, bb.device
    with torch.inference_mode(), bb.autocast():
        for start in range(0, len(paths), batch):
            data = [read_file(str(work / p)) for p in paths[start : start + batch]]
            decoded = decode_jpeg(data, device=device)
            shaped = [TF.center_crop(TF.resize(x, side, antialias=True), [side, side]) for x in decoded]
            bb.model.encode_image(to_model_input(torch.stack(shaped), *pixel_stats(bb.model), device))


def training_rates(bb: Backbone, image_batch: int, prompts: int, repeats: int = 3) -> dict:
    """Seconds and peak bytes of one forward + backward of ``image_batch`` images and of ``prompts`` prompts."""
    device, model = bb.device, bb.model
    amp = device.type == "cuda" and bb.precision == "amp"
    side = bb.image_size
    pixels = torch.randn(image_batch, 3, side, side, device=device)
    tokens = bb.tokenizer(["a photo of a cat."] * prompts).to(device)
    model.requires_grad_(True)

    def step(encode, x):
        def run() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = encode(x).float().pow(2).mean()
            loss.backward()
            model.zero_grad(set_to_none=True)

        return run

    image, text = step(model.encode_image, pixels), step(model.encode_text, tokens)
    image(), text()
    out = {
        "image_batch": image_batch,
        "prompts": prompts,
        "image_s": _best(image, device, repeats),
        "text_s": _best(text, device, repeats),
        "image_peak": _peak(image, device),
        "text_peak": _peak(text, device),
    }
    model.requires_grad_(False)
    return out


def step_estimates(plan: Plan, rates: dict) -> list[dict]:
    """Per method: seconds of its largest training step and its GPU-hours at the measured per-pass rates."""
    per_image = rates["image_s"] / rates["image_batch"]  # a back-propagating image pass
    per_prompt = rates["text_s"] / rates["prompts"]
    rows = []
    for r in plan.methods:
        w = r.work
        seconds = (w.images + w.frozen_images / 3) * per_image + (w.prompts + w.frozen_prompts / 3) * per_prompt
        rows.append(
            {
                "method": r.method,
                "step_s": w.step_images * per_image + w.step_prompts * per_prompt,
                "gpu_hours_measured": seconds / 3600,
                "gpu_hours_plan": plan.hours(r.flops),
            }
        )
    return rows


def render(result: dict) -> str:
    e, r = result["extraction"], result["rates"]
    lines = [
        f"# Accelerator bench ({result['device_name']}, {MODEL} random weights, precision {result['precision']})",
        "",
        f"Extraction, {e['images']} images, batch {e['batch']}: stage path {e['ours_ips']:,.0f} images/s, raw "
        f"`encode_image` on pre-decoded device tensors {e['raw_ips']:,.0f} images/s "
        f"(ratio {e['ours_ips'] / e['raw_ips']:.2f}); with {e['workers']} decode workers "
        f"(`runtime.decode_workers`) {e['workers_ips']:,.0f} images/s (ratio {e['workers_ips'] / e['raw_ips']:.2f}); "
        f"JPEG decoded on the device (`torchvision.io.decode_jpeg`, resize and crop there; an alternative, not the "
        f"stage path) {e['device_decode_ips']:,.0f} images/s (ratio {e['device_decode_ips'] / e['raw_ips']:.2f}).",
        "",
        f"One forward + backward: {r['image_batch']} images {r['image_s'] * 1e3:,.1f} ms (peak "
        f"{r['image_peak'] / 1e9:,.2f} GB); {r['prompts']} prompts {r['text_s'] * 1e3:,.1f} ms (peak "
        f"{r['text_peak'] / 1e9:,.2f} GB).",
        "",
        "| method | s per training step (largest) | device-hours at the measured rates "
        "| GPU-hours, plan (FLOPs on the stated GPU) |",
        "|---|---|---|---|",
    ]
    for row in result["methods"]:
        lines.append(
            f"| {row['method']} | {row['step_s']:.3f} | {row['gpu_hours_measured']:,.2f} | "
            f"{row['gpu_hours_plan']:,.2f} |"
        )
    lines += ["", "Step seconds are the encoder work of the step at the measured per-pass rates (see the module)."]
    return "\n".join(lines) + "\n"


def device_bench(
    plan: Plan, work: Path, device: torch.device, precision: str, quick: bool = True, workers: int | None = None
) -> dict:
    """The accelerator measurements; ``workers``: decode processes (default: the cores but one, at most 8)."""
    workers = min(8, max(1, (os.cpu_count() or 2) - 1)) if workers is None else workers
    bb = on_device(device, precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    images, batch, prompts = (256, 64, 100) if quick else (2048, 256, 1000)
    if device.type == "cpu":
        images, batch, prompts = 16, 8, 8
    rates = training_rates(bb, 32 if device.type == "cuda" else 2, prompts)
    return {
        "device_name": name,
        "precision": precision,
        "extraction": extraction(bb, work, images, batch, workers),
        "rates": rates,
        "methods": step_estimates(plan, rates),
    }
