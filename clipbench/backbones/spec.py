"""Backbone preparation and loading (see the package docstring); the specs live in :mod:`.registry`."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipbench.backbones.registry import BACKBONES, BackboneSpec, get_backbone, import_open_clip
from clipbench.errors import DataError
from clipbench.io import atomic_save_tensors, atomic_write_json

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
MANIFEST = "backbone.json"
__all__ = ["BACKBONES", "CHECKPOINT", "MANIFEST", "Backbone", "BackboneSpec", "checkpoint_path", "get_backbone",
           "load_backbone", "prepare_backbone", "save_prepared", "sha256_file"]


def checkpoint_path(directory: Path) -> Path:
    return Path(directory) / CHECKPOINT


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_prepared(spec: BackboneSpec, model: torch.nn.Module, directory: Path, extra: dict[str, Any]) -> Path:
    """Write ``checkpoint.safetensors`` and ``backbone.json`` (spec + checkpoint sha256) into ``directory``."""
    path = atomic_save_tensors(checkpoint_path(directory), dict(model.state_dict()))
    atomic_write_json(Path(directory) / MANIFEST, {
        "key": spec.key, "model": spec.model, "pretrained": spec.pretrained,
        "force_quick_gelu": spec.force_quick_gelu, "sha256": sha256_file(path), **extra,
    })
    return path


def prepare_backbone(spec: BackboneSpec, directory: Path, cache_dir: Path | None = None) -> Path:
    """Fetch a hub backbone through open_clip and store it locally (toy backbones: see ``toy_pretrain``)."""
    if spec.source != "hub":
        raise ValueError(f"backbone {spec.key!r} is prepared by pretraining, not by download")
    open_clip = import_open_clip()
    model = open_clip.create_model(spec.model, pretrained=spec.pretrained, force_quick_gelu=spec.force_quick_gelu,
                                   cache_dir=str(cache_dir) if cache_dir else None)
    return save_prepared(spec, model, directory, {"open_clip_version": open_clip.__version__})


@dataclass
class Backbone:
    """A loaded backbone: the open_clip model in eval mode, its eval transform and tokenizer."""

    spec: BackboneSpec
    model: Any
    preprocess: Any
    tokenizer: Any
    sha256: str

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised image embeddings of a normalised pixel batch."""
        return self.model.encode_image(pixels).float()

    @property
    def is_resnet(self) -> bool:
        return hasattr(self.model.visual, "attnpool")

    @property
    def pre_proj_dim(self) -> int:
        """Width of the image embedding before the visual projection (ViT width; ResNet attention-pool dim)."""
        visual = self.model.visual
        return int(visual.attnpool.c_proj.in_features if self.is_resnet else visual.proj.shape[0])

    def project(self, pre: torch.Tensor) -> torch.Tensor:
        """Apply the frozen visual projection to pre-projection features (ViT ``@ proj``; ResNet ``c_proj``)."""
        visual = self.model.visual
        if self.is_resnet:
            c_proj = visual.attnpool.c_proj
            return F.linear(pre, c_proj.weight, c_proj.bias)
        return pre @ visual.proj

    @torch.inference_mode()
    def encode_images_with_pre(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-projection and projected (unnormalised) embeddings from one forward pass (spec §2.2)."""
        with _without_projection(self.model.visual):
            pre = self.model.visual(pixels).float()
        return pre, self.project(pre).float()

    @torch.inference_mode()
    def text_classifier(self, prompts: list[list[str]]) -> torch.Tensor:
        """Class weights ``[C, D]``: each prompt normalised, averaged over templates, normalised again."""
        rows = []
        for texts in prompts:
            emb = F.normalize(self.model.encode_text(self.tokenizer(texts)).float(), dim=-1)
            rows.append(F.normalize(emb.mean(0), dim=-1))
        return torch.stack(rows)


@contextlib.contextmanager
def _without_projection(visual: torch.nn.Module) -> Iterator[None]:
    """Temporarily make the image tower stop before its projection (ViT ``proj``; ResNet ``attnpool.c_proj``).

    open_clip fuses the ResNet ``c_proj`` into the attention call, so it is swapped for an identity map, as
    ProLIP does; the ViT ``proj`` parameter is detached and restored.
    """
    if hasattr(visual, "attnpool"):
        pool, original = visual.attnpool, visual.attnpool.c_proj
        width = original.in_features
        identity = torch.nn.Linear(width, width).to(original.weight)
        with torch.no_grad():
            identity.weight.copy_(torch.eye(width))
            identity.bias.zero_()
        pool.c_proj = identity
        try:
            yield
        finally:
            pool.c_proj = original
        return
    proj = visual.proj
    visual.proj = None
    try:
        yield
    finally:
        visual.proj = proj


def load_backbone(key: str, directory: Path) -> Backbone:
    """Load a prepared backbone from ``directory`` through open_clip's local-checkpoint route."""
    spec = get_backbone(key)
    path = checkpoint_path(directory)
    if not path.is_file():
        raise DataError(f"backbone checkpoint {path} is missing; run `dvc repro backbone@{key}` first")
    open_clip = import_open_clip()
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model, pretrained=str(path), force_quick_gelu=spec.force_quick_gelu)
    except (RuntimeError, ValueError, OSError) as exc:
        raise DataError(f"backbone checkpoint {path} cannot be loaded as {spec.model} ({exc}); it is corrupt or "
                        f"of another architecture. Delete {directory} and run `dvc repro backbone@{key}`") from exc
    model.eval()
    return Backbone(spec, model, preprocess, open_clip.get_tokenizer(spec.model), sha256_file(path))
