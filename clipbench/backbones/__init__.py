"""Backbones: registry keys mapped to open_clip (architecture, pretrained tag or local checkpoint) pairs.

A backbone is *prepared* once by the ``backbone`` stage into ``models/backbones/<key>/``: a hub tag is fetched
through open_clip and re-saved as ``checkpoint.safetensors``; the toy backbone is pretrained on captioned toy
images. Every later stage loads that local checkpoint through open_clip's ``pretrained=<path>`` route, the
same route a user takes for their own checkpoint, and records its sha256.

The registry (:mod:`.registry`) is light; loading and preparing (:mod:`.spec`, torch) are imported on first
access, and open_clip only when a model is created (:func:`import_open_clip`, which also registers clipbench's
model configs: call it instead of ``import open_clip`` to create a ``clipbench-*`` architecture).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clipbench.backbones.registry import BACKBONES, BackboneSpec, get_backbone, import_open_clip, quiet_random_init

if TYPE_CHECKING:
    from clipbench.backbones.spec import (
        Backbone,
        checkpoint_path,
        load_backbone,
        prepare_backbone,
        verify_checkpoint,
    )

_FROM_SPEC = ("Backbone", "checkpoint_path", "load_backbone", "prepare_backbone", "verify_checkpoint")

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "checkpoint_path",
    "get_backbone",
    "import_open_clip",
    "load_backbone",
    "prepare_backbone",
    "quiet_random_init",
    "verify_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_SPEC:
        return getattr(importlib.import_module("clipbench.backbones.spec"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
