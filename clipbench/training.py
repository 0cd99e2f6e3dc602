"""Shared optimisation semantics used by several methods (spec §2.6, §2.7)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


def dassl_lr(epoch: int, base_lr: float, max_epoch: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """Dassl's learning rate for 0-indexed ``epoch``: constant warm-up, then cosine stepped once per epoch.

    With one warm-up epoch: e=0 -> ``warmup_lr``; e>=1 -> ``base_lr * (1 + cos(pi * (e - 1) / max_epoch)) / 2``.
    ``max_epoch`` counts the warm-up epoch, so the last epoch never reaches 0.
    """
    if epoch < warmup_epochs:
        return warmup_lr
    return base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / max_epoch))


def dassl_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled mini-batch indices for one epoch; the last partial batch is dropped only if ``n >= batch_size``."""
    order = torch.randperm(n, generator=generator)
    drop_last = n >= batch_size
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def count_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
