"""Backbones: registry keys mapped to open_clip (architecture, pretrained tag or local checkpoint) pairs.

A backbone is *prepared* once by the ``backbone`` stage into ``models/backbones/<key>/``: a hub tag is fetched
through open_clip and re-saved as ``checkpoint.safetensors``; the toy backbone is pretrained on captioned toy
images. Every later stage loads that local checkpoint through open_clip's ``pretrained=<path>`` route, the
same route a user takes for their own checkpoint, and records its sha256.
"""

from clipbench.backbones.spec import (
    BACKBONES,
    Backbone,
    BackboneSpec,
    checkpoint_path,
    get_backbone,
    load_backbone,
    prepare_backbone,
)

__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "checkpoint_path", "get_backbone", "load_backbone",
           "prepare_backbone"]
