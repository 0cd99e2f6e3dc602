"""Backbone preparation and loading (see the package docstring); the specs live in :mod:`.registry`."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipbench.backbones.registry import BACKBONES, BackboneSpec, get_backbone, import_open_clip
from clipbench.data.loader import pixel_stats, to_model_input
from clipbench.devices import host_float, to_host
from clipbench.errors import DataError
from clipbench.io import atomic_save_tensors, atomic_write_json

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
MANIFEST = "backbone.json"
__all__ = [
    "BACKBONES",
    "CHECKPOINT",
    "MANIFEST",
    "Backbone",
    "BackboneSpec",
    "checkpoint_path",
    "get_backbone",
    "load_backbone",
    "prepare_backbone",
    "save_prepared",
    "sha256_file",
    "verify_checkpoint",
]


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
    atomic_write_json(
        Path(directory) / MANIFEST,
        {
            "key": spec.key,
            "model": spec.model,
            "pretrained": spec.pretrained,
            "force_quick_gelu": spec.force_quick_gelu,
            "sha256": sha256_file(path),
            **extra,
        },
    )
    return path


def prepare_backbone(spec: BackboneSpec, directory: Path, cache_dir: Path | None = None) -> Path:
    """Fetch a hub backbone through open_clip and store it locally (toy backbones: see ``toy_pretrain``)."""
    if spec.source != "hub":
        raise ValueError(f"backbone {spec.key!r} is prepared by pretraining, not by download")
    open_clip = import_open_clip()
    try:
        model = open_clip.create_model(
            spec.model,
            pretrained=spec.pretrained,
            force_quick_gelu=spec.force_quick_gelu,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except Exception as exc:  # open_clip wraps download failures in RuntimeError; a bad cached file raises others
        raise DataError(
            f"backbone {spec.key}: open_clip cannot fetch {spec.model} {spec.pretrained!r} "
            f"({_first_line(exc)}); check network access or the open_clip cache, then run "
            f"`dvc repro backbone@{spec.key}`"
        ) from exc
    return save_prepared(spec, model, directory, {"open_clip_version": open_clip.__version__})


TEXT_BATCH = 1024  # prompts per text-encoder forward pass (ImageNet: 1,000 classes x 80 templates in 79 passes)


@dataclass
class Backbone:
    """A loaded backbone: the open_clip model in eval mode on its device, its eval transform and tokenizer.

    The encoders take inputs on any device and return embeddings on the CPU (:func:`clipbench.devices.to_host`),
    in fp32; with ``precision="amp"`` on CUDA the frozen passes run under fp16 autocast, as OpenAI CLIP's reference
    runs on a GPU.
    """

    spec: BackboneSpec
    model: Any
    preprocess: Any
    tokenizer: Any
    sha256: str
    precision: str = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """fp16 autocast for frozen passes with ``precision="amp"`` on CUDA; otherwise nothing."""
        if self.precision == "amp" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels on the model's device; uint8 batches (from the data loader) are normalised there."""
        if pixels.dtype == torch.uint8:
            return to_model_input(pixels, *pixel_stats(self.model), self.device)
        return pixels.to(self.device, non_blocking=pixels.is_pinned())

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def logit_scale(self) -> float:
        return host_float(self.model.logit_scale.detach().exp())

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised image embeddings (CPU, fp32) of a normalised pixel batch."""
        with self.autocast():
            return to_host(self.model.encode_image(self._inputs(pixels)).float())

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
        """Pre-projection and projected (unnormalised) embeddings from one forward pass (spec §2.2), on the CPU."""
        with _without_projection(self.model.visual), self.autocast():
            pre = self.model.visual(self._inputs(pixels)).float()
        return to_host(pre), to_host(self.project(pre).float())

    @torch.inference_mode()
    def text_classifier(self, prompts: list[list[str]], batch: int = TEXT_BATCH) -> torch.Tensor:
        """Class weights ``[C, D]`` (CPU): each prompt normalised, averaged over templates, normalised again.

        Prompts are encoded in passes of at most ``batch`` texts, so 1,000 classes x 80 templates fit any device.
        """
        texts = [t for group in prompts for t in group]
        parts = []
        for start in range(0, len(texts), batch):
            tokens = self.tokenizer(texts[start : start + batch]).to(self.device)
            with self.autocast():
                parts.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        emb = torch.cat(parts) if parts else torch.zeros(0, self.embed_dim, device=self.device)
        rows, start = [], 0
        for group in prompts:
            rows.append(F.normalize(emb[start : start + len(group)].mean(0), dim=-1))
            start += len(group)
        return to_host(torch.stack(rows))


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


def load_backbone(key: str, directory: Path, device: torch.device | str = "cpu", precision: str = "fp32") -> Backbone:
    """Load a prepared backbone from ``directory`` through open_clip's local-checkpoint route onto ``device``
    (once per stage; ``precision`` is ``runtime.precision``, applied to frozen passes on CUDA).

    The checkpoint is verified first (:func:`verify_checkpoint`); every failure is a :class:`DataError` naming
    the file and how to prepare it again.
    """
    spec, directory = get_backbone(key), Path(directory)
    sha = verify_checkpoint(spec, directory)
    path = checkpoint_path(directory)
    open_clip = import_open_clip()
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model, pretrained=str(path), force_quick_gelu=spec.force_quick_gelu
        )
    except Exception as exc:  # measured: RuntimeError, AssertionError, StopIteration, SafetensorError (an Exception)
        raise DataError(
            f"backbone checkpoint {path} does not load as {spec.model} ({_first_line(exc)}); {_fix(spec, directory)}"
        ) from exc
    model.eval().to(device)
    return Backbone(spec, model, preprocess, open_clip.get_tokenizer(spec.model), sha, precision)


def verify_checkpoint(spec: BackboneSpec, directory: Path) -> str:
    """The sha256 of ``directory``'s checkpoint once it is known to be a safetensors file whose sha256 and
    architecture match ``backbone.json`` (cheap checks only: no model is built)."""
    path, fix = checkpoint_path(directory), _fix(spec, directory)
    if not path.is_file():
        raise DataError(f"backbone checkpoint {path} is missing; {fix}")
    _check_safetensors(path, fix)
    manifest = _read_manifest(Path(directory) / MANIFEST, fix)
    stat = path.stat()
    sha = _checkpoint_sha(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if sha != manifest["sha256"]:
        raise DataError(
            f"backbone checkpoint {path} does not match the sha256 in {MANIFEST} (corrupt or modified); {fix}"
        )
    prepared = (manifest.get("model"), manifest.get("force_quick_gelu"))
    if prepared != (spec.model, spec.force_quick_gelu):
        raise DataError(
            f"backbone checkpoint {path} was prepared as {prepared[0]} (force_quick_gelu={prepared[1]}), "
            f"but backbone {spec.key!r} is {spec.model} (force_quick_gelu={spec.force_quick_gelu}); {fix}"
        )
    return sha


@functools.lru_cache(maxsize=8)
def _checkpoint_sha(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """The checkpoint's sha256, hashed once per process while the file is unchanged (a stage verifies the
    checkpoint for its cell keys and again when it loads the model)."""
    return sha256_file(Path(path))


def _fix(spec: BackboneSpec, directory: Path) -> str:
    run = f"run `dvc repro backbone@{spec.key}`"
    return f"delete {directory} and {run}" if Path(directory).exists() else run


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_safetensors(path: Path, fix: str) -> None:
    """Reject anything that does not start like a safetensors file (8-byte header length, then a JSON object)."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    size = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if 0 <= size <= path.stat().st_size - 8 and head[8:9] == b"{":
        return
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise DataError(
            f"backbone checkpoint {path} is a pickle / torch.save file; clipbench only loads safetensors "
            f"(convert a state dict with safetensors.torch.save_file); {fix}"
        )
    raise DataError(f"backbone checkpoint {path} is not a valid safetensors file (corrupt or truncated); {fix}")


def _read_manifest(path: Path, fix: str) -> dict[str, Any]:
    """``backbone.json``, which must record the checkpoint's sha256."""
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"backbone manifest {path} is missing, so the checkpoint cannot be verified; {fix}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"backbone manifest {path} is not readable JSON ({exc}); {fix}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
        raise DataError(f"backbone manifest {path} records no checkpoint sha256; {fix}")
    return manifest
