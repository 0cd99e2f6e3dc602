"""Shared instruments: an image-tower tally, a timer, random-init backbones, synthetic JPEGs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Tally:
    """Image-tower inputs and image decodes seen while active."""

    encoded: int = 0
    decoded: int = 0


def _is_image_tower(module: torch.nn.Module) -> bool:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    return isinstance(module, (VisionTransformer, ModifiedResNet))


@contextlib.contextmanager
def tally_encoder() -> Iterator[Tally]:
    """Count every image entering an open_clip image tower and every ``PIL.Image.open`` (any caller)."""
    from PIL import Image

    tally, original_open = Tally(), Image.open

    def pre_hook(module, args):
        if args and isinstance(args[0], torch.Tensor) and _is_image_tower(module):
            tally.encoded += int(args[0].shape[0])

    def counting_open(*args, **kwargs):
        tally.decoded += 1
        return original_open(*args, **kwargs)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
    Image.open = counting_open
    try:
        yield tally
    finally:
        handle.remove()
        Image.open = original_open


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def random_backbone(model_name: str, key: str | None = None):
    """A random-initialised :class:`~clipbench.backbones.Backbone` of an open_clip architecture."""
    from clipbench.backbones.registry import BackboneSpec, import_open_clip
    from clipbench.backbones.spec import Backbone

    open_clip = import_open_clip()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    spec = BackboneSpec(key or model_name, model_name, "random-init")
    return Backbone(spec, model.eval(), preprocess, open_clip.get_tokenizer(model_name), "random-init")


def write_jpegs(root: Path, n: int, side: int, seed: int = 0) -> list[str]:
    """``n`` smooth random colour images (4:3, longer side ``side``) as JPEG files; returns relative paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        big = np.asarray(small.resize((side, side * 3 // 4), Image.BICUBIC)).astype(np.int16)
        big = np.clip(big + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)
        name = f"img_{i:05d}.jpg"
        Image.fromarray(big).save(root / name, quality=90)
        paths.append(name)
    return paths
