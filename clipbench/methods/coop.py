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
end, generic); the base-to-new and cross-dataset runs of the CoCoOp paper use ``ctx_init: "a photo of a"``, set
per protocol in ``configs/paper.yaml`` (``method_params.coop.base2new``, ``method_params.coop.cross_dataset``).

Unseen classes (base-to-new "new", other datasets): the generic context is class-agnostic, so the prompts are
rebuilt for the target's class names. Class-specific contexts (``csc``) are mapped by class id; unseen classes
are not applicable.

Deviations:
- trains on cached embeddings of augmented views rather than re-encoding every step: epoch ``e`` reads view
  ``e`` of each image, one fresh Dassl view (RRC(``crop_scale`` 0.08-1, bicubic) + flip) per epoch and per run
  seed, so it equals re-encoding (the image encoder is frozen). Methods with the same recipe read the same cached
  views (each run's are independent in the reference); ``features.max_views`` caps the distinct views (then
  epoch ``e`` reads view ``e mod cap``).
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
    train_class_index,
)
from clipbench.methods.prompting import (
    Position,
    PromptBuffers,
    TextTower,
    encode_classes,
    encode_context,
    init_context,
    logits_of,
    require_backbone,
)
from clipbench.methods.training import dassl_batches, dassl_lr, set_lr
from clipbench.methods.work import FP32, Arch, CellShape, EncoderWork, TargetShape, steps


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
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop scale of the training views (Dassl)

    def validate(self, where: str) -> None:
        _positive(self, where, "n_ctx", "batch_size")
        check_crop_scale(self.crop_scale, where)
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
            raise ConfigError(
                f"epochs_by_shots lists no entry for {shots} shots (shots {sorted(table)}); add one or set epochs"
            )
        return table[max(listed)]


class CoOp(Method):
    """Learned prompt context, frozen CLIP encoders."""

    name = "coop"
    requires = Inputs.FEATURES
    uses_backbone = True
    Config = CoOpConfig
    smoke = {"n_ctx": 4, "epochs": 2}  # tiny-run overrides (tests, bench): see Method.smoke

    @classmethod
    def view_need(cls, config: CoOpConfig, dataset: str, shots: int) -> ViewNeed:
        return ViewNeed(ViewRecipe(config.crop_scale), config.epochs_for(dataset, shots))  # one view per epoch

    @classmethod
    def training_work(cls, config: CoOpConfig, cell: CellShape, arch: Arch) -> EncoderWork:
        """Every step back-propagates through the text encoder for all training classes' prompts."""
        n = steps(cell.images, config.batch_size, config.epochs_for(cell.dataset, cell.shots))
        return EncoderWork(prompts=n * cell.classes, step_prompts=cell.classes)

    @classmethod
    def eval_work(cls, config: CoOpConfig, target: TargetShape, arch: Arch) -> EncoderWork:
        return EncoderWork(frozen_prompts=target.classes)

    @classmethod
    def state_bytes(cls, config: CoOpConfig, cell: CellShape, arch: Arch) -> int:
        tokens = len(config.ctx_init.split()) if config.ctx_init else config.n_ctx
        return FP32 * tokens * arch.text_width * (cell.classes if config.csc else 1)

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

    def fit(self, task: FitTask) -> dict[str, float | int]:
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
                loss = F.cross_entropy(
                    logits_of(views[epoch % len(views)][idx], text, task.logit_scale), task.train.labels[idx]
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.ctx = ctx.detach().clone()
        return {"final_loss": host_float(loss), "epochs": epochs}

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
        return encode_classes(tower, prompts, ctx).float()

    def predictor(self, target: EvalTarget):
        text = self.text_features(target)
        return lambda x: logits_of(x.float(), text, target.logit_scale)

    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        return self.predictor(target)(x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"ctx": self.ctx}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.ctx = state["ctx"]
