"""Planned encoder work of the paper suite and its GPU-hours, from FLOP counts (``clipbench bench`` section f).

Pure arithmetic over the spec's dataset sizes (§3.1, §3.5) and protocols (§5): how many images the frozen
backbone must encode once (feature extraction shared by every frozen-encoder method), and how much encoder
work the image-level methods (ClipFit, CLIP-CITE) need because they train the encoders. FLOPs are counted as
2 x multiply-accumulates; the per-image and per-prompt forward FLOPs are measured by the caller.

Assumptions (stated in the report):

* few-shot pools are bounded by the sum of all (K, seed) samples, capped at the split size (the union is smaller
  whenever samples overlap); validation sets take ``min(K, 4)`` images per class (CoOp); ImageNet has no
  validation split and draws its few-shot validation images from the 50,000-image test object;
* a training step costs 3 forward passes (forward + backward); ClipFit re-encodes the class prompts of all
  training classes every step (its text biases train); CLIP-CITE encodes the in-batch class texts (SCL) and all
  training-class prompts (VLD student) every step, and runs the frozen teacher image encoder once per image;
* each image-level training cell re-encodes the test sets it is evaluated on (its encoder is its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSize:
    name: str
    classes: int
    train: int
    val: int  # 0: no validation split (few-shot val images come from the test object)
    test: int


PAPER_SOURCES = (
    DatasetSize("imagenet", 1000, 1_281_167, 0, 50_000),
    DatasetSize("caltech101", 100, 4_128, 1_649, 2_465),
    DatasetSize("oxford_pets", 37, 2_944, 736, 3_669),
    DatasetSize("stanford_cars", 196, 6_509, 1_635, 8_041),
    DatasetSize("oxford_flowers", 102, 4_093, 1_633, 2_463),
    DatasetSize("food101", 101, 50_500, 20_200, 30_300),
    DatasetSize("fgvc_aircraft", 100, 3_334, 3_333, 3_333),
    DatasetSize("sun397", 397, 15_880, 3_970, 19_850),
    DatasetSize("dtd", 47, 2_820, 1_128, 1_692),
    DatasetSize("eurosat", 10, 13_500, 5_400, 8_100),
    DatasetSize("ucf101", 101, 7_639, 1_898, 3_783),
)
PAPER_TARGETS = (
    DatasetSize("imagenetv2", 1000, 0, 0, 10_000),
    DatasetSize("imagenet_sketch", 1000, 0, 0, 50_889),
    DatasetSize("imagenet_a", 200, 0, 0, 7_500),
    DatasetSize("imagenet_r", 200, 0, 0, 30_000),
)


@dataclass(frozen=True)
class PaperProtocols:
    """Spec §5: few-shot K x seeds on every source, base-to-new 16 shots, ImageNet 16-shot transfer source."""

    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    seeds: int = 3
    base2new_shots: int = 16
    transfer_source: str = "imagenet"
    transfer_shots: int = 16
    views: int = 10  # cached augmented views per few-shot training image


@dataclass(frozen=True)
class ImageLevelMethod:
    """Training recipe of a method that trains the encoders (spec §6.8, §6.9)."""

    name: str
    epochs: dict[str, int]  # per dataset; key "*" is the default
    batch_size: dict[str, int]
    text_per_step_all_classes: bool  # re-encodes every training-class prompt each step
    text_per_image: int = 0  # class texts encoded per training image (CLIP-CITE's SCL)
    teacher_image_passes: int = 0  # frozen-teacher image forwards per training image (CLIP-CITE's VLD)

    def value(self, table: dict[str, int], dataset: str) -> int:
        return table.get(dataset, table["*"])


PAPER = PaperProtocols()
CLIPFIT = ImageLevelMethod("ClipFit", {"imagenet": 10, "food101": 10, "*": 100}, {"*": 32}, True)
CLIP_CITE = ImageLevelMethod("CLIP-CITE", {"*": 20}, {"eurosat": 16, "imagenet": 64, "*": 32}, True,
                             text_per_image=1, teacher_image_passes=1)


def pool_bound(d: DatasetSize, p: PaperProtocols) -> tuple[int, int]:
    """Upper bounds of the few-shot train and val pools (union over every K and seed)."""
    val_source = d.val or d.test
    train = min(d.train, d.classes * sum(p.shots) * p.seeds)
    val = min(val_source, d.classes * sum(min(k, 4) for k in p.shots) * p.seeds)
    return train, val


def extraction_images(p: PaperProtocols, sources=PAPER_SOURCES, targets=PAPER_TARGETS) -> dict[str, int]:
    """Image-encoder inputs of one frozen backbone's feature extraction for the whole suite."""
    pools = [pool_bound(d, p) for d in sources]
    return {"train_pool": sum(t for t, _ in pools), "views": sum(t for t, _ in pools) * p.views,
            "val_pool": sum(v for _, v in pools), "test": sum(d.test for d in sources) + sum(d.test for d in targets)}


def training_cells(p: PaperProtocols, sources=PAPER_SOURCES) -> list[tuple[DatasetSize, int, int]]:
    """(dataset, shots, training classes) of every distinct training cell (transfer reuses few-shot cells)."""
    cells = [(d, k, d.classes) for d in sources for k in p.shots for _ in range(p.seeds)]
    cells += [(d, p.base2new_shots, math.ceil(d.classes / 2)) for d in sources for _ in range(p.seeds)]
    return cells


def image_level_flops(m: ImageLevelMethod, p: PaperProtocols, f_img: float, f_txt: float,
                      sources=PAPER_SOURCES, targets=PAPER_TARGETS) -> dict[str, float]:
    """Training and evaluation FLOPs of one image-level method over the suite."""
    train_img = train_txt = 0.0
    for d, k, classes in training_cells(p, sources):
        images, epochs = k * classes, m.value(m.epochs, d.name)
        steps = epochs * max(1, images // m.value(m.batch_size, d.name))
        train_img += epochs * images * (3 + m.teacher_image_passes) * f_img
        train_txt += epochs * images * m.text_per_image * 3 * f_txt
        train_txt += steps * classes * 3 * f_txt if m.text_per_step_all_classes else 0.0
    eval_images = sum(d.test for d, _, _ in training_cells(p, sources))
    transfer = any(d.name == p.transfer_source for d in sources)  # its cells also score the other test sets
    others = [d for d in (*sources, *targets) if d.name != p.transfer_source] if transfer else []
    eval_images += p.seeds * sum(d.test for d in others)
    eval_prompts = sum(d.classes for d, _, _ in training_cells(p, sources)) + p.seeds * sum(d.classes for d in others)
    return {"train": train_img + train_txt, "train_image": train_img, "train_text": train_txt,
            "eval": eval_images * f_img + eval_prompts * f_txt, "eval_images": float(eval_images)}


def reencoding_flops(epochs: int, p: PaperProtocols, f_img: float, sources=PAPER_SOURCES) -> float:
    """Image-encoder FLOPs a frozen-encoder method would spend re-encoding its training images every epoch."""
    return sum(epochs * k * classes * f_img for _, k, classes in training_cells(p, sources))


def gpu_hours(flops: float, sustained_tflops: float) -> float:
    return flops / (sustained_tflops * 1e12) / 3600
