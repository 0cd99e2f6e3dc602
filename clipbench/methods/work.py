"""What a method costs, in encoder passes and bytes, for ``clipbench plan`` (no tensor is computed).

A method states its cost through three class methods of :class:`~clipbench.methods.base.Method`:
``training_work(config, cell, arch)`` and ``eval_work(config, target, arch)`` return :class:`EncoderWork` (passes
through the image and text encoders, and what one optimisation step holds for backward), ``state_bytes(config,
cell, arch)`` the size of its stored cell. :class:`Arch` describes the backbone architecture (computed on the meta
device by :mod:`clipbench.plan`); ``config`` is already resolved for the cell's dataset.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Arch:
    """A backbone architecture: per-pass FLOPs, activation bytes saved for backward, parameter shapes."""

    model: str
    image_size: int
    embed_dim: int  # D: the joint embedding
    image_width: int  # W: the image tower's width before the projection
    text_width: int  # the text transformer's width
    image_flops: float  # forward FLOPs (2 x MAC) of one image
    text_flops: float  # forward FLOPs of one prompt (full context)
    image_activation_bytes: float  # fp32 tensors saved for backward per image
    text_activation_bytes: float  # per prompt
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # every parameter (open_clip names)

    @property
    def params(self) -> int:
        return sum(math.prod(s) for _, s in self.shapes)

    def params_matching(self, pattern: str) -> int:
        """Parameters whose name fully matches ``pattern`` (an anchored regex; "" matches none)."""
        rx = re.compile(pattern) if pattern else None
        return sum(math.prod(s) for n, s in self.shapes if rx and rx.fullmatch(n))


@dataclass(frozen=True)
class CellShape:
    """One training cell as a cost estimate sees it."""

    dataset: str
    shots: int
    classes: int  # training classes (all, or the base half)
    images: int  # few-shot training images
    views: int  # cached augmented views per image


@dataclass(frozen=True)
class TargetShape:
    """One evaluation: the test images and classes it scores."""

    images: int
    classes: int


PER_STEP = ("step_images", "step_prompts", "trained_params")


@dataclass(frozen=True)
class EncoderWork:
    """Encoder passes of a cell. Passes that back-propagate cost 3 forwards (forward + backward)."""

    images: float = 0.0  # image-encoder forwards that back-propagate
    prompts: float = 0.0  # text-encoder forwards (one prompt each) that back-propagate
    frozen_images: float = 0.0  # forward-only image passes (teacher, evaluation)
    frozen_prompts: float = 0.0  # forward-only prompt passes
    step_images: float = 0.0  # back-propagating images of one optimisation step (activation memory)
    step_prompts: float = 0.0  # back-propagating prompts of one step
    trained_params: float = 0.0  # encoder parameters holding gradients and optimiser state

    def __add__(self, other: EncoderWork) -> EncoderWork:
        """Passes add up; the per-step figures (memory) keep the larger of the two."""
        values = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            values[f.name] = max(a, b) if f.name in PER_STEP else a + b
        return EncoderWork(**values)

    def flops(self, arch: Arch) -> float:
        image = 3 * self.images + self.frozen_images
        text = 3 * self.prompts + self.frozen_prompts
        return image * arch.image_flops + text * arch.text_flops

    @property
    def image_passes(self) -> float:
        return self.images + self.frozen_images

    @property
    def prompt_passes(self) -> float:
        return self.prompts + self.frozen_prompts


def steps(images: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of ``epochs`` epochs (Dassl: the last partial batch dropped when a full one exists)."""
    return epochs * (images // batch_size if images >= batch_size else 1)


FP32 = 4
