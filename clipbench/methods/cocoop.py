"""CoCoOp, conditional context optimisation (Zhou et al., CVPR'22, arXiv 2203.05557; KaiyangZhou/CoOp
``trainers/cocoop.py``).

Trainable: a generic context (init "a photo of a", M = 4) and a Meta-Net ``Linear(D -> D/16) -> ReLU ->
Linear(D/16 -> W)`` with biases (D = image embedding dim, W = text width; 35,360 parameters on ViT-B/16). For
each image the normalised image feature gives ``pi(x) = MetaNet(f(x))``, added to every context token; the
prompts of all classes are built with that image's context and encoded by the frozen text tower (see
``clipbench.methods.coop``), and the logits are ``s * cos(f(x), t_c(x))``. Cross-entropy.

Optimisation (Dassl, spec §2.6, §6.4): SGD lr 0.002, momentum 0.9, weight decay 5e-4, batch size 1, 10 epochs,
one constant warm-up epoch at 1e-5, cosine per epoch. The last-epoch model is kept: no validation-based
selection. Class-agnostic: unseen classes and other datasets get prompts built from their own class names.

Deviations: trains on cached embeddings of augmented views rather than re-encoding: epoch ``e`` reads view ``e``
of each image, one fresh Dassl view (RRC(``crop_scale`` 0.08-1, bicubic) + flip) per epoch and per run seed,
which equals re-encoding (frozen image encoder); views are shared with methods of the same recipe and capped by
``features.max_views`` (then view ``e mod cap``); fp32 instead of fp16; with ``trim_prompts`` the text
transformer runs only up to the last EOT position and computes the shared [SOT][ctx] positions once per image
instead of once per class (both exact up to float rounding).
Prediction encodes the prompts of all classes for every image (as the reference), in chunks of
``predict_chunk`` prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipbench.devices import host_float
from clipbench.errors import ConfigError, NotApplicable
from clipbench.methods.base import (
    EvalTarget,
    FitTask,
    Inputs,
    Method,
    MethodConfig,
    ViewNeed,
    ViewRecipe,
    check_crop_scale,
)
from clipbench.methods.prompting import PromptBuffers, TextTower, encode_per_image, init_context, require_backbone
from clipbench.methods.training import dassl_batches, dassl_lr, set_lr
from clipbench.methods.work import FP32, Arch, CellShape, EncoderWork, TargetShape, steps


@dataclass(frozen=True)
class CoCoOpConfig(MethodConfig):
    ctx_init: str | None = "a photo of a"  # reference config vit_b16_c4_ep10_batch1_ctxv1
    n_ctx: int = 4  # used only without ctx_init (random N(0, init_std^2) init)
    init_std: float = 0.02
    meta_reduction: int = 16  # Meta-Net hidden width = D / meta_reduction
    lr: float = 2e-3
    epochs: int = 10
    batch_size: int = 1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_lr: float = 1e-5
    warmup_epochs: int = 1  # Dassl WARMUP_EPOCH (constant lr warmup_lr)
    trim_prompts: bool = True
    predict_chunk: int = 8192  # prompts per text-encoder call at prediction time (memory bound only)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop scale of the training views (Dassl)

    def validate(self, where: str) -> None:
        check_crop_scale(self.crop_scale, where)
        for name in ("n_ctx", "meta_reduction", "epochs", "batch_size", "predict_chunk"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}: must be positive, got {getattr(self, name)}")
        if self.ctx_init is not None and not self.ctx_init.strip():
            raise ConfigError(f"{where}.ctx_init: must be non-empty text or null")
        if self.lr < 0 or self.warmup_lr < 0:
            raise ConfigError(f"{where}: lr and warmup_lr must be >= 0, got {self.lr}, {self.warmup_lr}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"{where}.warmup_epochs: must be >= 0, got {self.warmup_epochs}")


class ConditionalPrompt(nn.Module):
    """Context vectors plus the Meta-Net that shifts them per image."""

    def __init__(self, ctx: torch.Tensor, image_dim: int, hidden: int) -> None:
        super().__init__()
        self.ctx = nn.Parameter(ctx)
        self.meta_net = nn.Sequential(
            nn.Linear(image_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, ctx.shape[-1])
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Per-image contexts ``[B, M, W]`` for normalised image features ``[B, D]``."""
        return self.ctx[None] + self.meta_net(image)[:, None]


def conditional_logits(
    prompt: ConditionalPrompt, tower: TextTower, prompts: PromptBuffers, image: torch.Tensor, scale: float
) -> torch.Tensor:
    """``[B, C]`` logits: every image's prompts for all classes through the text tower."""
    image = F.normalize(image, dim=-1)
    text = encode_per_image(tower, prompts, prompt(image))
    return scale * torch.einsum("bd,bcd->bc", image, F.normalize(text, dim=-1))


class CoCoOp(Method):
    """Image-conditional prompt context, frozen CLIP encoders."""

    name = "cocoop"
    requires = Inputs.FEATURES
    uses_backbone = True
    Config = CoCoOpConfig
    smoke = {"epochs": 1}  # tiny-run overrides (tests, bench): see Method.smoke

    @classmethod
    def view_need(cls, config: CoCoOpConfig, dataset: str, shots: int) -> ViewNeed:
        return ViewNeed(ViewRecipe(config.crop_scale), config.epochs)  # one view per epoch

    @classmethod
    def training_work(cls, config: CoCoOpConfig, cell: CellShape, arch: Arch) -> EncoderWork:
        """Each image gets its own prompts: the text encoder runs (and back-propagates) once per image and class."""
        n = steps(cell.images, config.batch_size, config.epochs)
        return EncoderWork(prompts=n * config.batch_size * cell.classes, step_prompts=config.batch_size * cell.classes)

    @classmethod
    def eval_work(cls, config: CoCoOpConfig, target: TargetShape, arch: Arch) -> EncoderWork:
        return EncoderWork(frozen_prompts=target.images * target.classes)

    @classmethod
    def state_bytes(cls, config: CoCoOpConfig, cell: CellShape, arch: Arch) -> int:
        tokens = len(config.ctx_init.split()) if config.ctx_init else config.n_ctx
        hidden = arch.embed_dim // config.meta_reduction
        meta = (arch.embed_dim + 1) * hidden + (hidden + 1) * arch.text_width
        return FP32 * (tokens * arch.text_width + meta)

    selection = "none (last epoch)"

    def __init__(self, config: CoCoOpConfig) -> None:
        super().__init__(config)
        self.prompt: ConditionalPrompt | None = None

    def build_prompt(self, task: FitTask) -> ConditionalPrompt:
        """The trainable context and Meta-Net at their initial values."""
        backbone = require_backbone(task, self.name)
        torch.manual_seed(task.seed)
        ctx = init_context(backbone, self.config, None, torch.Generator().manual_seed(task.seed))
        hidden = backbone.embed_dim // self.config.meta_reduction
        return ConditionalPrompt(ctx, backbone.embed_dim, hidden).to(backbone.device)

    def fit(self, task: FitTask) -> dict[str, float | int]:
        cfg = self.config
        self.prompt = self.build_prompt(task)
        prompts = PromptBuffers(task.backbone, task.space.classnames, self.prompt.ctx.shape[0], "end")
        tower = TextTower(task.backbone.model, copy_weights=True, trim=cfg.trim_prompts)
        opt = torch.optim.SGD(self.prompt.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(task.seed)
        views = task.train.view_stack().float()
        loss = torch.tensor(float("nan"))
        for epoch in range(cfg.epochs):
            set_lr(opt, dassl_lr(epoch, cfg.lr, cfg.epochs, cfg.warmup_epochs, cfg.warmup_lr))
            for idx in dassl_batches(len(task.train), cfg.batch_size, gen):
                logits = conditional_logits(
                    self.prompt, tower, prompts, views[epoch % len(views)][idx], task.logit_scale
                )
                loss = F.cross_entropy(logits, task.train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.prompt.requires_grad_(False)
        return {"final_loss": host_float(loss), "epochs": cfg.epochs}

    def predictor(self, target: EvalTarget):
        if self.prompt is None:
            raise NotApplicable("CoCoOp has not been fitted")
        backbone = require_backbone(target, self.name)
        prompts = PromptBuffers(backbone, target.space.classnames, self.prompt.ctx.shape[0], "end")
        tower = TextTower(backbone.model, copy_weights=False, trim=self.config.trim_prompts)
        step = max(1, self.config.predict_chunk // len(prompts))

        @torch.no_grad()
        def score(x: torch.Tensor) -> torch.Tensor:
            if len(x) == 0:
                return x.new_zeros(0, len(prompts))
            return torch.cat(
                [
                    conditional_logits(self.prompt, tower, prompts, x[i : i + step].float(), target.logit_scale)
                    for i in range(0, len(x), step)
                ]
            )

        return score

    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        return self.predictor(target)(x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.prompt.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        hidden, image_dim = state["meta_net.0.weight"].shape
        self.prompt = ConditionalPrompt(state["ctx"].clone(), image_dim, hidden).to(state["ctx"].device)
        self.prompt.load_state_dict(state)
        self.prompt.requires_grad_(False)
