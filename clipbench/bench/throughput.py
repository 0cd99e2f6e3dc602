"""(b) Extraction throughput against a raw ``encode_image`` loop over pre-decoded tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from clipbench import features
from clipbench.bench.instruments import random_backbone, timed


def _raw_loop(model, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for batch in batches:
            model.encode_image(batch)


def throughput(image_dir: Path, paths: list[str], model_name: str, batch_size: int, repeats: int = 2) -> dict:
    """Images/s of ``encode_paths`` (decode + transform + encode) vs ``encode_image`` on pre-decoded tensors."""
    from clipbench.data.images import open_rgb

    bb = random_backbone(model_name)
    tensors = torch.stack([bb.preprocess(open_rgb(image_dir / p)) for p in paths])
    batches = list(tensors.split(batch_size))
    _raw_loop(bb.model, [tensors[:2]])
    features.encode_paths(bb, image_dir, paths[:2], batch_size)
    raw, ours = [], []
    for _ in range(repeats):  # interleaved, best of ``repeats`` each: robust to a shared CPU
        raw.append(timed(_raw_loop, bb.model, batches)[0])
        ours.append(timed(features.encode_paths, bb, image_dir, paths, batch_size)[0])
    n = len(paths)
    return {
        "model": model_name,
        "image_size": bb.image_size,
        "images": n,
        "batch_size": batch_size,
        "raw_ips": n / min(raw),
        "ours_ips": n / min(ours),
        "ratio": min(raw) / min(ours),
    }
