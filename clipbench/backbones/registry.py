"""The backbone registry and the one way into open_clip.

This module imports neither torch nor open_clip, so the suite configuration can check backbone names without
paying for them; :func:`import_open_clip` imports open_clip on first use and registers clipbench's model
configs (``model_configs/``) before anything creates a model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from clipbench.registry import Registry

_CONFIG_DIR = Path(__file__).parent / "model_configs"


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: an open_clip architecture and where its weights come from."""

    key: str
    model: str  # open_clip architecture name (a built-in config or one in model_configs/)
    pretrained: str  # open_clip pretrained tag, or "toy" for weights pretrained by clipbench
    force_quick_gelu: bool = False  # OpenAI checkpoints were trained with QuickGELU (spec §2.1 pitfall)
    source: Literal["hub", "toy"] = "hub"


BACKBONES: Registry[BackboneSpec] = Registry(
    "backbone",
    {
        "toy_vit": BackboneSpec("toy_vit", "clipbench-toy-vit", "toy", source="toy"),
        "vitb16_openai": BackboneSpec("vitb16_openai", "ViT-B-16", "openai", force_quick_gelu=True),
        "vitb32_openai": BackboneSpec("vitb32_openai", "ViT-B-32", "openai", force_quick_gelu=True),
        "rn50_openai": BackboneSpec("rn50_openai", "RN50", "openai", force_quick_gelu=True),
        "rn101_openai": BackboneSpec("rn101_openai", "RN101", "openai", force_quick_gelu=True),
    },
)


def get_backbone(key: str) -> BackboneSpec:
    return BACKBONES.get(key)


@functools.cache
def import_open_clip() -> ModuleType:
    """The ``open_clip`` module with clipbench's model configs registered (imported and registered once)."""
    import open_clip

    open_clip.add_model_config(_CONFIG_DIR)
    return open_clip


@contextlib.contextmanager
def quiet_random_init():
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" warning where random or no weights
    are the point (toy pretraining, architecture measurements on the meta device, random-weight test backbones)."""

    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
