"""CoOp, context optimisation (Zhou et al., IJCV'22, arXiv 2109.01134; KaiyangZhou/CoOp ``trainers/coop.py``).

Trainable: only the context vectors ``ctx`` of the prompt ``[SOT] ctx_1 .. ctx_M <classname> . [EOT]``; generic
(``M x W``, shared by all classes, the default) or class-specific (``csc``: ``C x M x W``). Random init
N(0, 0.02^2) with M = 16 (paper default), or the token embeddings of ``ctx_init`` (e.g. "a photo of a", M = 4,
the base-to-new configs). The prompt is tokenised as ``"X X .. X <classname>."``; the SOT embedding (prefix)
and the class-name/"."/EOT/padding embeddings (suffix) are fixed buffers; the class tokens sit at the ``end``
(default), in the ``middle`` of the context, or at the ``front`` (spec §6.3).

Text features: (embeddings + positional embedding) -> frozen text transformer with its causal mask -> ln_final
-> the EOT position (argmax of token ids) -> text projection, the same computation as open_clip's
``CLIP.encode_text`` (batch-first). Logits ``s * cos(f(x), t_c)`` with the backbone's logit scale; image encoder
frozen; cross-entropy.

Optimisation (Dassl, spec §2.6): SGD lr 0.002, momentum 0.9, weight decay 5e-4, batch 32, one constant warm-up
epoch at 1e-5, cosine stepped per epoch; epochs by shots (1 -> 50, 2/4 -> 100, 8/16 -> 200; ImageNet 50 for all
shots). The last-epoch context is kept: no validation-based selection.

Settings for the paper suite: the few-shot/DG tables of the CoOp paper use the defaults (M = 16, random init,
end, generic); the base-to-new and cross-dataset runs of the CoCoOp paper use ``ctx_init: "a photo of a"`` —
set ``method_params.coop.ctx_init`` for such a suite (one config per method and suite).

Unseen classes (base-to-new "new", other datasets): the generic context is class-agnostic, so the prompts are
rebuilt for the target's class names. Class-specific contexts (``csc``) are mapped by class id; unseen classes
are not applicable.

Deviations:
- trains on cached embeddings of augmented views (epoch ``e`` uses view ``e mod V``) rather than re-encoding every
  step; the image encoder is frozen, so this equals re-encoding with that view sequence. The shared view cache
  uses the suite's ``features.view_scale`` (RRC(0.5-1) + flip) rather than Dassl's RRC(0.08-1) + flip.
- fp32 throughout (reference: fp16 weights and context).
- ``trim_prompts`` (default on): the transformer runs only up to the longest prompt's EOT position, and for a
  generic context at the end the shared [SOT][ctx] positions are computed once rather than once per class
  (class tokens attend to their keys/values). Under the causal mask both are exact up to float rounding (about
  1e-6 here) and save most of the work. With it off the text features equal ``encode_text`` bitwise.
- ``ctx_init`` sets M to its number of BPE tokens (the reference counts words, which only differs for words
  that split into several tokens); with ``csc`` every class starts from the ``ctx_init`` embeddings (the
  reference falls back to a generic context).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipbench.errors import ConfigError, NotApplicable
from clipbench.methods.base import EvalTarget, FitTask, Inputs, Method, MethodConfig, train_class_index
from clipbench.training import dassl_batches, dassl_lr, set_lr

Position = Literal["end", "middle", "front"]
PLACEHOLDER = "X"


def _positive(cfg: MethodConfig, where: str, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{where}.{name}: must be positive, got {getattr(cfg, name)}")


@dataclass(frozen=True)
class CoOpConfig(MethodConfig):
    n_ctx: int = 16  # context length M for random init (ignored when ctx_init is set)
    ctx_init: str | None = None  # e.g. "a photo of a" (base-to-new configs); None = random N(0, init_std^2)
    init_std: float = 0.02
    csc: bool = False  # class-specific context (C x M x W)
    class_token_position: Position = "end"
    lr: float = 2e-3
    epochs: int | None = None  # fixed epoch count (overrides the two rules below)
    epochs_by_shots: tuple[tuple[int, int], ...] = ((1, 50), (2, 100), (4, 100), (8, 200), (16, 200))  # (K, epochs)
    dataset_epochs: tuple[tuple[str, int], ...] = (("imagenet", 50),)  # (dataset, epochs for every K)
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_lr: float = 1e-5
    trim_prompts: bool = True  # run the text transformer only up to the last EOT (exact up to rounding)

    def validate(self, where: str) -> None:
        _positive(self, where, "n_ctx", "batch_size")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"{where}.epochs: must be positive or null, got {self.epochs}")
        for name in ("epochs_by_shots", "dataset_epochs"):
            bad = {k: v for k, v in getattr(self, name) if v <= 0}
            if bad:
                raise ConfigError(f"{where}.{name}: epochs must be positive, got {bad}")
        if self.ctx_init is not None and not self.ctx_init.strip():
            raise ConfigError(f"{where}.ctx_init: must be non-empty text or null")
        if self.lr < 0 or self.warmup_lr < 0:
            raise ConfigError(f"{where}: lr and warmup_lr must be >= 0, got {self.lr}, {self.warmup_lr}")

    def epochs_for(self, dataset: str, shots: int) -> int:
        """``epochs`` if set, else the dataset's fixed count, else the entry of the largest listed shots <= K."""
        if self.epochs is not None:
            return self.epochs
        fixed = dict(self.dataset_epochs)
        if dataset in fixed:
            return fixed[dataset]
        table = dict(self.epochs_by_shots)
        listed = [k for k in table if k <= shots]
        if not listed:
            raise ConfigError(f"epochs_by_shots lists no entry for {shots} shots (shots {sorted(table)}); add one "
                              "or set epochs")
        return table[max(listed)]


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

    def forward(self, embeddings: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Projected text features ``[N, D]`` of prompt embeddings ``[N, L, W]`` with EOT positions ``[N]``."""
        length = int(eot.max()) + 1 if self.trim else embeddings.shape[1]
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
        return self.trim and self.attn_mask is not None and all(
            isinstance(getattr(b, "attn", None), nn.MultiheadAttention) and b.attn.batch_first
            and not hasattr(b, "ln_1_kv") and all(hasattr(b, n) for n in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
            for b in blocks)

    def encode_shared_prefix(self, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Text features ``[B, C, D]`` of prompts ``prefix[b] + suffix[c]`` (``[B, P, W]``, ``[C, S, W]``).

        Under the causal mask the prefix positions never attend to the class tokens, so they are computed once
        per prefix instead of once per class; the class tokens attend to the prefix keys/values of each layer.
        Equals :meth:`forward` on the concatenated prompts up to float rounding. ``eot`` indexes the full prompt.
        """
        n_pre = prefix.shape[1]
        length = int(eot.max()) + 1
        pre = prefix + self.positional_embedding[:n_pre]
        suf = suffix[:, :length - n_pre] + self.positional_embedding[n_pre:length]
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


def tokenize_checked(tokenizer, texts: list[str], context_length: int) -> torch.Tensor:
    """Token ids ``[N, context_length]``; a clear error instead of silent truncation of a too-long prompt."""
    long = tokenizer(texts, context_length=context_length + 64)
    lengths = long.argmax(dim=-1) + 1
    worst = int(lengths.argmax())
    if int(lengths[worst]) > context_length:
        raise ConfigError(f"prompt {texts[worst]!r} needs {int(lengths[worst])} tokens but the text encoder holds "
                          f"{context_length}; use a shorter context (n_ctx / ctx_init)")
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
        with torch.no_grad():
            ctx = model.token_embedding(ids[1:1 + n_ctx]).detach().clone().float()
    else:
        ctx = torch.empty(cfg.n_ctx, width).normal_(0.0, cfg.init_std, generator=generator)
    return ctx if n_rows is None else ctx[None].repeat(n_rows, 1, 1)


class PromptBuffers(nn.Module):
    """Fixed prompt pieces of a list of class names for M context slots (CoOp's token prefix/suffix)."""

    def __init__(self, backbone, classnames: tuple[str, ...], n_ctx: int, position: Position) -> None:
        super().__init__()
        model = backbone.model
        texts = [" ".join([PLACEHOLDER] * n_ctx + [name.replace("_", " ")]) + "." for name in classnames]
        ids = tokenize_checked(backbone.tokenizer, texts, context_length(model))
        with torch.no_grad():
            emb = model.token_embedding(ids).detach().float()
        self.n_ctx, self.position = n_ctx, position
        self.register_buffer("prefix", emb[:, :1])
        self.register_buffer("suffix", emb[:, 1 + n_ctx:])
        self.register_buffer("eot", ids.argmax(dim=-1))
        self.name_lens = [int(e) - n_ctx - 2 for e in self.eot]  # tokens between the context and "."

    def __len__(self) -> int:
        return self.prefix.shape[0]

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
            around = [ctx[..., c, :half, :], name, ctx[..., c, half:, :]] if self.position == "middle" \
                else [name, ctx[..., c, :, :]]
            rows.append(torch.cat([prefix[..., c, :, :], *around, rest], dim=-2))
        return torch.stack(rows, dim=-3)


def encode_per_image(tower: TextTower, prompts: PromptBuffers, ctx: torch.Tensor) -> torch.Tensor:
    """Text features ``[B, C, D]`` of all classes' prompts for each of the generic contexts ``[B, M, W]``."""
    n_img, n_cls = ctx.shape[0], len(prompts)
    if tower.can_share_prefix and prompts.position == "end":
        prefix = torch.cat([prompts.prefix[:1].expand(n_img, -1, -1), ctx], dim=1)
        return tower.encode_shared_prefix(prefix, prompts.suffix, prompts.eot)
    embeddings = prompts.assemble(ctx[:, None].expand(n_img, n_cls, *ctx.shape[1:]))
    return tower(embeddings.flatten(0, 1), prompts.eot.repeat(n_img)).view(n_img, n_cls, -1)


def encode_context(tower: TextTower, prompts: PromptBuffers, ctx: torch.Tensor) -> torch.Tensor:
    """Text features ``[C, D]`` for a generic ``[M, W]`` or class-specific ``[C, M, W]`` context."""
    if ctx.dim() == 2:
        return encode_per_image(tower, prompts, ctx[None])[0]
    return tower(prompts.assemble(ctx), prompts.eot)


def logits_of(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T


class CoOp(Method):
    """Learned prompt context, frozen CLIP encoders."""

    name = "coop"
    requires = Inputs.FEATURES
    uses_backbone = True
    Config = CoOpConfig
    selection = "none (last epoch)"

    def __init__(self, config: CoOpConfig) -> None:
        super().__init__(config)
        self.ctx: torch.Tensor | None = None

    def prompt_parameters(self, task: FitTask) -> tuple[nn.Parameter, PromptBuffers]:
        """The trainable context at its initial value and the prompt buffers of the task's classes."""
        cfg = self.config
        backbone = require_backbone(task, self.name)
        generator = torch.Generator().manual_seed(task.seed)
        ctx = nn.Parameter(init_context(backbone, cfg, len(task.space) if cfg.csc else None, generator))
        return ctx, PromptBuffers(backbone, task.space.classnames, ctx.shape[-2], cfg.class_token_position)

    def fit(self, task: FitTask) -> dict[str, float]:
        cfg = self.config
        ctx, prompts = self.prompt_parameters(task)
        tower = TextTower(task.backbone.model, copy_weights=True, trim=cfg.trim_prompts)
        epochs = cfg.epochs_for(task.dataset, task.shots)
        opt = torch.optim.SGD([ctx], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(task.seed)
        views = F.normalize(task.train.view_stack().float(), dim=-1)
        loss = torch.tensor(float("nan"))
        for epoch in range(epochs):
            set_lr(opt, dassl_lr(epoch, cfg.lr, epochs, warmup_lr=cfg.warmup_lr))
            for idx in dassl_batches(len(task.train), cfg.batch_size, gen):
                text = encode_context(tower, prompts, ctx)
                loss = F.cross_entropy(logits_of(views[epoch % len(views)][idx], text, task.logit_scale),
                                       task.train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.ctx = ctx.detach().clone()
        return {"final_loss": float(loss.detach()), "epochs": float(epochs)}

    def _target_context(self, target: EvalTarget) -> torch.Tensor:
        if self.ctx.dim() == 2:
            return self.ctx
        if not self.config.csc:
            raise ValueError("a class-specific context was loaded into a generic-context CoOp config")
        return self.ctx[train_class_index(target)]  # NotApplicable for unseen classes

    @torch.no_grad()
    def text_features(self, target: EvalTarget) -> torch.Tensor:
        """Projected, unnormalised text features ``[C, D]`` of the learned prompts for ``target.space``."""
        if self.ctx is None:
            raise NotApplicable("CoOp has not been fitted")
        backbone = require_backbone(target, self.name)
        ctx = self._target_context(target)
        prompts = PromptBuffers(backbone, target.space.classnames, ctx.shape[-2], self.config.class_token_position)
        tower = TextTower(backbone.model, copy_weights=False, trim=self.config.trim_prompts)
        return encode_context(tower, prompts, ctx).float()

    def predictor(self, target: EvalTarget):
        text = self.text_features(target)
        return lambda x: logits_of(x.float(), text, target.logit_scale)

    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        return self.predictor(target)(x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"ctx": self.ctx}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.ctx = state["ctx"]
