"""Prompt-learning text path shared by CoOp and CoCoOp: learned context tokens through the frozen text tower.

A shared module, not a registered method: it is in the computed code closure (:mod:`clipbench.codegraph`) of
every method that imports it, so editing it re-runs exactly CoOp's and CoCoOp's stages and cells.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipbench.devices import to_host
from clipbench.errors import ConfigError
from clipbench.methods.base import EvalTarget, FitTask

Position = Literal["end", "middle", "front"]
PLACEHOLDER = "X"
# Classes per text-encoder pass when no gradient is kept (evaluation): ImageNet's 1,000 class prompts are encoded
# in 4 bounded passes. Training encodes all classes in one pass, as the references do (the loss needs them all).
CLASSES_PER_PASS = 256


def require_backbone(obj: FitTask | EvalTarget, method: str):
    if obj.backbone is None:
        raise ValueError(f"{method} needs the backbone (uses_backbone); the pipeline passed none")
    return obj.backbone


class TextTower(nn.Module):
    """The text side of open_clip's ``CLIP.encode_text`` after the token embedding (CoOp's TextEncoder).

    ``copy_weights=True`` holds a frozen copy (for training: gradients flow to the prompts, never into the
    shared backbone); ``False`` references the backbone's modules (inference under ``no_grad``). ``trim`` runs
    the transformer only up to the longest prompt's EOT position.
    """

    def __init__(self, model: nn.Module, copy_weights: bool, trim: bool = True) -> None:
        super().__init__()
        self.trim = trim  # causal mask: positions after the last EOT never reach a pooled token
        if getattr(model, "text_pool_type", "argmax") != "argmax" or not hasattr(model, "token_embedding"):
            raise ValueError("prompt learning supports open_clip CLIP models with argmax (EOT) text pooling")
        take = copy.deepcopy if copy_weights else (lambda m: m)
        self.transformer = take(model.transformer)
        self.ln_final = take(model.ln_final)
        self.projection = take(model.text_projection)
        self.register_buffer("positional_embedding", model.positional_embedding.detach(), persistent=False)
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)
        if copy_weights:
            self.requires_grad_(False)

    def forward(self, embeddings: torch.Tensor, eot: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Projected text features ``[N, D]`` of prompt embeddings ``[N, L, W]`` with EOT positions ``[N]``
        (``length``: positions up to the last EOT, if known on the host; else read from ``eot``)."""
        if not self.trim:
            length = embeddings.shape[1]
        elif length is None:
            length = prompt_length(eot)
        x = embeddings[:, :length] + self.positional_embedding[:length]
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        return self._project(x[torch.arange(x.shape[0], device=x.device), eot])

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x) if isinstance(self.projection, nn.Linear) else x @ self.projection

    @property
    def can_share_prefix(self) -> bool:
        """Standard pre-norm open_clip blocks (batch-first attention, causal mask): prefix sharing is exact."""
        blocks = self.transformer.resblocks
        return (
            self.trim
            and self.attn_mask is not None
            and all(
                isinstance(getattr(b, "attn", None), nn.MultiheadAttention)
                and b.attn.batch_first
                and not hasattr(b, "ln_1_kv")
                and all(hasattr(b, n) for n in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
                for b in blocks
            )
        )

    def encode_shared_prefix(
        self, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor, length: int | None = None
    ) -> torch.Tensor:
        """Text features ``[B, C, D]`` of prompts ``prefix[b] + suffix[c]`` (``[B, P, W]``, ``[C, S, W]``).

        Under the causal mask the prefix positions never attend to the class tokens, so they are computed once
        per prefix instead of once per class; the class tokens attend to the prefix keys/values of each layer.
        Equals :meth:`forward` on the concatenated prompts up to float rounding. ``eot`` indexes the full prompt.
        """
        n_pre = prefix.shape[1]
        length = prompt_length(eot) if length is None else length
        pre = prefix + self.positional_embedding[:n_pre]
        suf = suffix[:, : length - n_pre] + self.positional_embedding[n_pre:length]
        n_img, n_cls, n_suf = pre.shape[0], suf.shape[0], suf.shape[1]
        suf = suf.expand(n_img, *suf.shape).flatten(0, 1)  # [B*C, S, W]
        pre_mask, suf_mask = self.attn_mask[:n_pre, :n_pre], self.attn_mask[n_pre:length, :length]
        for block in self.transformer.resblocks:
            h_pre, h_suf = block.ln_1(pre), block.ln_1(suf)
            kv = torch.cat([h_pre.repeat_interleave(n_cls, dim=0), h_suf], dim=1)
            suf = suf + block.ls_1(block.attention(h_suf, kv, kv, attn_mask=suf_mask))
            pre = pre + block.ls_1(block.attention(h_pre, attn_mask=pre_mask))
            suf = suf + block.ls_2(block.mlp(block.ln_2(suf)))
            pre = pre + block.ls_2(block.mlp(block.ln_2(pre)))
        suf = self.ln_final(suf).view(n_img, n_cls, n_suf, -1)
        pooled = suf[:, torch.arange(n_cls, device=suf.device), eot - n_pre]  # [B, C, W]
        return self._project(pooled)


def prompt_length(eot: torch.Tensor) -> int:
    """Positions up to the last EOT token (a host read: it sizes the tensors of the pass)."""
    return int(to_host(eot).max()) + 1


def tokenize_checked(tokenizer, texts: list[str], context_length: int) -> torch.Tensor:
    """Token ids ``[N, context_length]``; a clear error instead of silent truncation of a too-long prompt."""
    long = tokenizer(texts, context_length=context_length + 64)
    lengths = long.argmax(dim=-1) + 1
    worst = int(lengths.argmax())
    if int(lengths[worst]) > context_length:
        raise ConfigError(
            f"prompt {texts[worst]!r} needs {int(lengths[worst])} tokens but the text encoder holds "
            f"{context_length}; use a shorter context (n_ctx / ctx_init)"
        )
    return long[:, :context_length]


def context_length(model: nn.Module) -> int:
    return int(model.positional_embedding.shape[0])


def init_context(backbone, cfg, n_rows: int | None, generator: torch.Generator) -> torch.Tensor:
    """Initial context ``[M, W]`` (or ``[n_rows, M, W]`` for class-specific contexts)."""
    model = backbone.model
    width = model.token_embedding.weight.shape[1]
    if cfg.ctx_init is not None:
        ids = tokenize_checked(backbone.tokenizer, [cfg.ctx_init.strip()], context_length(model))[0]
        n_ctx = int(ids.argmax()) - 1
        ids = ids.to(backbone.device)
        with torch.no_grad():
            ctx = model.token_embedding(ids[1 : 1 + n_ctx]).detach().clone().float()
    else:
        ctx = torch.empty(cfg.n_ctx, width).normal_(0.0, cfg.init_std, generator=generator).to(backbone.device)
    return ctx if n_rows is None else ctx[None].repeat(n_rows, 1, 1)


class PromptBuffers(nn.Module):
    """Fixed prompt pieces of a list of class names for M context slots (CoOp's token prefix/suffix)."""

    def __init__(self, backbone, classnames: tuple[str, ...], n_ctx: int, position: Position) -> None:
        super().__init__()
        model = backbone.model
        texts = [" ".join([PLACEHOLDER] * n_ctx + [name.replace("_", " ")]) + "." for name in classnames]
        ids = tokenize_checked(backbone.tokenizer, texts, context_length(model))
        eot = ids.argmax(dim=-1)
        with torch.no_grad():
            emb = model.token_embedding(ids.to(backbone.device)).detach().float()
        self.n_ctx, self.position = n_ctx, position
        self.register_buffer("prefix", emb[:, :1])
        self.register_buffer("suffix", emb[:, 1 + n_ctx :])
        self.register_buffer("eot", eot.to(backbone.device))
        self.name_lens = [int(e) - n_ctx - 2 for e in eot]
        self.length = (
            int(eot.max()) + 1 if len(eot) else 1
        )  # positions up to the last EOT (known on the host)  # tokens between the context and "."

    def __len__(self) -> int:
        return self.prefix.shape[0]

    def rows(self, classes: slice) -> PromptBuffers:
        """The prompts of a slice of the classes (same prompt length, so each row is encoded as in the whole)."""
        part = copy.copy(self)
        part._buffers = {name: t[classes] for name, t in self._buffers.items()}
        part.name_lens = self.name_lens[classes]
        return part

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``[..., C, L, W]`` for a generic context ``[M, W]`` or contexts ``[..., C, M, W]``."""
        if ctx.dim() == 2:
            ctx = ctx.expand(len(self), *ctx.shape)
        prefix = self.prefix.expand(*ctx.shape[:-2], *self.prefix.shape[-2:])
        suffix = self.suffix.expand(*ctx.shape[:-2], *self.suffix.shape[-2:])
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=-2)
        half, rows = self.n_ctx // 2, []
        for c, n in enumerate(self.name_lens):
            name, rest = suffix[..., c, :n, :], suffix[..., c, n:, :]
            around = (
                [ctx[..., c, :half, :], name, ctx[..., c, half:, :]]
                if self.position == "middle"
                else [name, ctx[..., c, :, :]]
            )
            rows.append(torch.cat([prefix[..., c, :, :], *around, rest], dim=-2))
        return torch.stack(rows, dim=-3)


def encode_per_image(tower: TextTower, prompts: PromptBuffers, ctx: torch.Tensor) -> torch.Tensor:
    """Text features ``[B, C, D]`` of all classes' prompts for each of the generic contexts ``[B, M, W]``."""
    n_img, n_cls = ctx.shape[0], len(prompts)
    if tower.can_share_prefix and prompts.position == "end":
        prefix = torch.cat([prompts.prefix[:1].expand(n_img, -1, -1), ctx], dim=1)
        return tower.encode_shared_prefix(prefix, prompts.suffix, prompts.eot, prompts.length)
    embeddings = prompts.assemble(ctx[:, None].expand(n_img, n_cls, *ctx.shape[1:]))
    return tower(embeddings.flatten(0, 1), prompts.eot.repeat(n_img), prompts.length).view(n_img, n_cls, -1)


def encode_context(tower: TextTower, prompts: PromptBuffers, ctx: torch.Tensor) -> torch.Tensor:
    """Text features ``[C, D]`` for a generic ``[M, W]`` or class-specific ``[C, M, W]`` context."""
    if ctx.dim() == 2:
        return encode_per_image(tower, prompts, ctx[None])[0]
    return tower(prompts.assemble(ctx), prompts.eot, prompts.length)


def encode_classes(
    tower: TextTower, prompts: PromptBuffers, ctx: torch.Tensor, per_pass: int = CLASSES_PER_PASS
) -> torch.Tensor:
    """:func:`encode_context` in passes of at most ``per_pass`` classes (inference: memory bounded by the pass)."""
    if len(prompts) <= per_pass:
        return encode_context(tower, prompts, ctx)
    parts = []
    for start in range(0, len(prompts), per_pass):
        rows = slice(start, start + per_pass)
        parts.append(encode_context(tower, prompts.rows(rows), ctx if ctx.dim() == 2 else ctx[rows]))
    return torch.cat(parts)


def logits_of(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
