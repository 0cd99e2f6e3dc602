"""How big each measurement of ``clipbench bench`` is (``QUICK`` and ``FULL``)."""

from __future__ import annotations

from dataclasses import dataclass

# caps of the method params in the reduced suite (whether set in params.yaml or left at the Config default)
CAPS = {"epochs": 5, "iterations": 20, "bisection_steps": 2}


@dataclass(frozen=True)
class BenchSize:
    """How big each measurement is (``QUICK`` fits a few shared CPU minutes; ``FULL`` is for a real machine)."""

    name: str
    reduce_suite: bool  # (a, d): reduced toy suite; False runs params.yaml's suite as it is
    dvc_methods: tuple[str, ...] | None  # (d): methods of the DVC run (None: every method of the suite)
    throughput: tuple[tuple[str, int, int], ...]  # (b): (open_clip model, images, batch size)
    train_classes: int  # (c): few-shot task size
    train_shots: int
    train_views: int
    adapter_epochs: int
    prolip_iterations: int
    memory_images: tuple[int, int]  # (e)
    image_side: int = 320  # synthetic JPEG size for (b, e)


QUICK = BenchSize(
    "quick",
    True,
    ("zeroshot", "clip_adapter"),
    (("clipbench-toy-vit", 512, 256), ("ViT-B-32", 16, 8)),
    10,
    16,
    10,
    20,
    30,
    (200, 800),
)
FULL = BenchSize(
    "full", False, None, (("clipbench-toy-vit", 4096, 256), ("ViT-B-16", 256, 64)), 30, 16, 10, 200, 300, (1000, 8000)
)
