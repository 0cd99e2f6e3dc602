"""Contrastive pretraining of the tiny toy CLIP on captioned toy-world images.

Standard CLIP objective (symmetric InfoNCE with a learned temperature), AdamW with linear warm-up and cosine
decay. Images come from the pretraining stream of the toy world, disjoint from every evaluation image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipbench.backbones.registry import BackboneSpec, import_open_clip, quiet_random_init
from clipbench.backbones.spec import save_prepared
from clipbench.data.toy.suite import pretraining_pairs
from clipbench.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyPretrainConfig:
    """Hyper-parameters of toy-backbone pretraining."""

    images: int = 24000  # captioned images in the pretraining pool
    steps: int = 900  # optimiser steps
    batch_size: int = 256
    lr: float = 2.0e-3
    weight_decay: float = 0.1
    warmup_steps: int = 60
    seed: int = 0

    def validate(self, where: str) -> None:
        for name in ("images", "steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}: must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.seed < 0:
            raise ConfigError(f"{where}: need lr > 0, weight_decay >= 0, warmup_steps >= 0 and seed >= 0")


def to_pixels(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, H, W]``."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _lr_at(step: int, cfg: ToyPretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    logits = logit_scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = torch.arange(len(img))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def pretrain(spec: BackboneSpec, cfg: ToyPretrainConfig, directory: Path) -> Path:
    """Pretrain ``spec``'s architecture from scratch and save it as a prepared backbone in ``directory``."""
    open_clip = import_open_clip()
    torch.manual_seed(cfg.seed)
    with quiet_random_init():  # random initialisation is the point here, not a missing checkpoint
        model = open_clip.create_model(spec.model)
    tokenizer = open_clip.get_tokenizer(spec.model)
    images, captions = pretraining_pairs(cfg.images, cfg.seed)
    pixels = to_pixels(
        images,
        model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN,
        model.visual.image_std or open_clip.OPENAI_DATASET_STD,
    )
    tokens = tokenizer(captions)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        idx = torch.randint(len(pixels), (cfg.batch_size,), generator=gen)
        loss = clip_loss(model.encode_image(pixels[idx]), model.encode_text(tokens[idx]), model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == cfg.steps - 1:
            log.info("pretrain step %d/%d loss %.4f", step + 1, cfg.steps, loss.item())
    model.eval()
    return save_prepared(spec, model, directory, {"pretrain": cfg.__dict__, "final_loss": float(loss.item())})
