"""Planned encoder work of the paper suite and its GPU-hours, from FLOP counts (``clipbench bench`` section f).

Pure arithmetic over a suite's dataset sizes (the specs' published ``expected`` counts, §3.1, §3.5), its
protocols (§5) and its image-level methods' resolved configs: how many images the frozen
backbone must encode once (feature extraction shared by every frozen-encoder method), and how much encoder
work the image-level methods (ClipFit, CLIP-CITE) need because they train the encoders. FLOPs are counted as
2 x multiply-accumulates; the per-image and per-prompt forward FLOPs are measured by the caller.

Assumptions (stated in the report):

* few-shot pools are bounded by the sum of all (K, seed) samples, capped at the split size (the union is smaller
  whenever samples overlap); validation sets take ``min(K, 4)`` images per class (CoOp), or the whole validation
  split under ``selection: full_val`` when a method of the suite selects (:mod:`clipbench.selection`); ImageNet has no
  validation split and draws its few-shot validation images from the 50,000-image test object;
* a training step costs 3 forward passes (forward + backward); ClipFit re-encodes the class prompts of all
  training classes every step (its text biases train); CLIP-CITE encodes the in-batch class texts (SCL) and all
  training-class prompts (VLD student) every step, and runs the frozen teacher image encoder once per image;
* each image-level training cell re-encodes the test sets it is evaluated on (its encoder is its own);
* the transfer protocols reuse the source's 16-shot few-shot cells, unless a protocol override
  (``method_params.<method>.<protocol>``) gives them another config: such a cell is trained once more per seed
  and config (:func:`transfer_configs`) and re-encodes the source's test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from clipbench.config import SuiteConfig
from clipbench.data import DATASETS
from clipbench.errors import ConfigError
from clipbench.methods import METHODS, Inputs, MethodConfig, resolve_config
from clipbench.protocols import protocol_configs
from clipbench.selection import needs_full_val
from clipbench.typed import stable_hash
from clipbench.views import estimated_pairs, view_groups


@dataclass(frozen=True)
class DatasetSize:
    name: str
    classes: int
    train: int
    val: int  # 0: no validation split (few-shot val images come from the test object)
    test: int

    @classmethod
    def published(cls, name: str) -> DatasetSize:
        """The published sizes a registered dataset spec declares (its ``expected`` counts)."""
        counts = getattr(DATASETS.get(name), "expected", None)
        if counts is None:
            raise ConfigError(
                f"compute plan: dataset {name!r} declares no published sizes (`expected`); "
                "plan a suite of CoOp-layout datasets"
            )
        return cls(name, counts.classes, counts.train or 0, counts.val or 0, counts.test)


@dataclass(frozen=True)
class PaperProtocols:
    """What the estimate needs of a suite: sources, targets, shots, seeds, views, transfer source (spec §5)."""

    sources: tuple[DatasetSize, ...]
    targets: tuple[DatasetSize, ...]
    shots: tuple[int, ...]
    seeds: int
    base2new_shots: int
    transfer_source: str
    view_pairs: int  # cached (image, augmented view) pairs of the methods' view recipes (upper bound)
    full_val: bool = False  # the whole validation split is encoded (selection: full_val and a method selects)


def suite_protocols(suite: SuiteConfig) -> PaperProtocols:
    """The plan of ``suite`` (e.g. ``configs/paper.yaml`` loaded through :func:`clipbench.config.load_suite`)."""
    p = suite.protocols
    missing = [name for name in ("few_shot", "base2new", "cross_dataset") if name not in p]
    if missing:
        raise ConfigError(f"compute plan: the suite needs protocols {', '.join(missing)}")
    return PaperProtocols(
        tuple(DatasetSize.published(d) for d in suite.datasets),
        tuple(DatasetSize.published(d) for d in suite.targets),
        p["few_shot"].shots,
        len(p["few_shot"].seeds),
        p["base2new"].shots,
        p["cross_dataset"].source,
        sum(
            estimated_pairs(g, DatasetSize.published(d).classes, DatasetSize.published(d).train)
            for d in suite.datasets
            for g in view_groups(suite, d)
        ),
        any(needs_full_val(suite, d) for d in suite.datasets),
    )


def per_dataset(config: MethodConfig, name: str, dataset: str) -> Any:
    """Field ``name`` of ``config`` for a cell whose source is ``dataset`` (its ``by_dataset`` entry applied)."""
    return getattr(resolve_config(config, dataset), name)


# Encoder work per training step beyond the image forward/backward, per image-level method (spec §6.8, §6.9);
# a method not listed here is estimated from its image passes alone.
TEXT_AND_TEACHER_WORK: dict[str, dict[str, Any]] = {
    "clipfit": {"text_per_step_all_classes": True},
    "clip_cite": {"text_per_step_all_classes": True, "text_per_image": 1, "teacher_image_passes": 1},
}


@dataclass(frozen=True)
class ImageLevelMethod:
    """Training recipe of a method that trains the encoders: its resolved config and its extra encoder work."""

    name: str
    config: MethodConfig = field(repr=False)
    transfer_configs: tuple[MethodConfig, ...] = field(default=(), repr=False)  # extra transfer cells' configs
    text_per_step_all_classes: bool = False  # re-encodes every training-class prompt each step
    text_per_image: int = 0  # class texts encoded per training image (CLIP-CITE's SCL)
    teacher_image_passes: int = 0  # frozen-teacher image forwards per training image (CLIP-CITE's VLD)

    def epochs(self, dataset: str, config: MethodConfig | None = None) -> int:
        return per_dataset(config or self.config, "epochs", dataset)

    def batch_size(self, dataset: str, config: MethodConfig | None = None) -> int:
        return per_dataset(config or self.config, "batch_size", dataset)


def transfer_configs(suite: SuiteConfig, method: str) -> tuple[MethodConfig, ...]:
    """The configs under which ``method`` trains the transfer source's 16-shot cell beside its few-shot one: one
    per distinct cross-dataset / DG config that differs from the few-shot one (protocol overrides)."""
    if "cross_dataset" not in suite.protocols:
        return ()
    base, own = protocol_configs(suite, method, suite.protocols["cross_dataset"].source)
    shared = stable_hash(own.get("few_shot", base))
    transfer = [own.get(n, base) for n in ("cross_dataset", "domain_generalization") if n in suite.protocols]
    return tuple({stable_hash(c): c for c in transfer if stable_hash(c) != shared}.values())


def image_level_methods(suite: SuiteConfig) -> list[ImageLevelMethod]:
    """Every method of ``suite`` that consumes images, with its config as the suite resolves it."""
    return [
        ImageLevelMethod(m, suite.method_config(m), transfer_configs(suite, m), **TEXT_AND_TEACHER_WORK.get(m, {}))
        for m in suite.methods
        if METHODS.get(m).requires is Inputs.IMAGES
    ]


def pool_bound(d: DatasetSize, p: PaperProtocols) -> tuple[int, int]:
    """Upper bounds of the few-shot train and val pools (union over every K and seed)."""
    val_source = d.val or d.test
    train = min(d.train, d.classes * sum(p.shots) * p.seeds)
    val = min(val_source, d.classes * sum(min(k, 4) for k in p.shots) * p.seeds)
    return train, (d.val if p.full_val and d.val else val)


def extraction_images(p: PaperProtocols) -> dict[str, int]:
    """Image-encoder inputs of one frozen backbone's feature extraction for the whole suite."""
    pools = [pool_bound(d, p) for d in p.sources]
    return {
        "train_pool": sum(t for t, _ in pools),
        "views": p.view_pairs,
        "val_pool": sum(v for _, v in pools),
        "test": sum(d.test for d in (*p.sources, *p.targets)),
    }


def training_cells(p: PaperProtocols) -> list[tuple[DatasetSize, int, int]]:
    """(dataset, shots, training classes) of every distinct training cell (transfer reuses few-shot cells)."""
    cells = [(d, k, d.classes) for d in p.sources for k in p.shots for _ in range(p.seeds)]
    cells += [(d, p.base2new_shots, math.ceil(d.classes / 2)) for d in p.sources for _ in range(p.seeds)]
    return cells


def image_level_flops(m: ImageLevelMethod, p: PaperProtocols, f_img: float, f_txt: float) -> dict[str, float]:
    """Training and evaluation FLOPs of one image-level method over the suite."""
    train_img = train_txt = 0.0
    source = [d for d in p.sources if d.name == p.transfer_source]
    extra = [(d, max(p.shots), d.classes, c) for d in source for c in m.transfer_configs] * p.seeds
    for d, k, classes, config in [(*cell, None) for cell in training_cells(p)] + extra:
        images, epochs = k * classes, m.epochs(d.name, config)
        steps = epochs * max(1, images // m.batch_size(d.name, config))
        train_img += epochs * images * (3 + m.teacher_image_passes) * f_img
        train_txt += epochs * images * m.text_per_image * 3 * f_txt
        train_txt += steps * classes * 3 * f_txt if m.text_per_step_all_classes else 0.0
    eval_images = sum(d.test for d, _, _ in training_cells(p)) + sum(d.test for d, *_ in extra)
    transfer = any(d.name == p.transfer_source for d in p.sources)  # its cells also score the other test sets
    others = [d for d in (*p.sources, *p.targets) if d.name != p.transfer_source] if transfer else []
    eval_images += p.seeds * sum(d.test for d in others)
    eval_prompts = sum(d.classes for d, _, _ in training_cells(p)) + p.seeds * sum(d.classes for d in others)
    eval_prompts += sum(classes for _, _, classes, _ in extra)
    return {
        "train": train_img + train_txt,
        "train_image": train_img,
        "train_text": train_txt,
        "eval": eval_images * f_img + eval_prompts * f_txt,
        "eval_images": float(eval_images),
    }


def reencoding_flops(epochs: int, p: PaperProtocols, f_img: float) -> float:
    """Image-encoder FLOPs a frozen-encoder method would spend re-encoding its training images every epoch."""
    return sum(epochs * k * classes * f_img for _, k, classes in training_cells(p))


def gpu_hours(flops: float, sustained_tflops: float) -> float:
    return flops / (sustained_tflops * 1e12) / 3600
