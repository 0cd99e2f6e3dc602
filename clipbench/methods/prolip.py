"""ProLIP, visual projection fine-tuning (Fahes et al., arXiv 2410.05270; astra-vision/ProLIP; spec §6.7).

Reference code: ``methods/ProLIP.py`` (``VisProjViT`` / ``VisProjRN``, ``search_init_hp``).

Trainable: a copy of the visual projection, nothing else (spec §6.7). ViT: ``visual.proj`` ``[W, D]`` applied as
``pre @ P`` (ViT-B/16: 768 x 512 = 393,216 scalars). ResNet: the weight of ``visual.attnpool.c_proj`` ``[D, W]``
(RN50: 1024 x 2048 = 2,097,152); its bias is copied as a frozen buffer. The backbone itself is never modified.

Forward on cached pre-projection features: ``z = proj(x_pre)``, ``logits = s * normalise(z) @ t^T`` with the frozen
zero-shot text classifier ``t`` and the backbone's logit scale ``s`` (100 for OpenAI weights). Loss:
``CE + lambda * sum((W - W0)^2)`` (a sum of squares, as the reference's ``MSELoss(reduction='sum')``), with
``lambda = 1/N`` (N = shots per class) in the validation-free headline setting. Optimisation: Adam (no weight
decay), lr 1e-5, eps 1e-4, cosine annealing with ``T_max = steps`` stepped every iteration, 300 iterations, each
one full batch over all training features of one cached augmented view. The projection is class-agnostic, so
new classes, other datasets and domain-shift targets are scored through their own text classifier.

Few-shot-validation variant (``select_on_val``, off by default): every (lr, lambda) of the reference grid is
trained as above, the first strict maximum of few-shot validation accuracy is kept (lr outer, lambda inner, as in
the reference loop). The reference then retrains with the selection; training is deterministic (full batch,
fixed view order), so clipbench keeps the selected run's projection, which is the same result.

Views: as the reference, one cached augmented view per step (RRC(``crop_scale`` 0.5-1, bicubic) + flip; 300
steps read 300 views, step ``t`` view ``t``, where the reference starts its cycle at view 1: the views are
independent draws, so the order does not matter), drawn per run seed and shared with Tip-Adapter's identical
recipe; ``features.max_views`` caps them (then step ``t`` reads view ``t mod cap``).

Deviations: fp32 features and weights (the reference caches fp16 features from ``clip.load`` on CUDA). The few-shot
validation set is clipbench's min(K, 4) per class, not the reference's K per class (``selection: full_val``: the
source dataset's whole validation split; :mod:`clipbench.selection`).

Text recipe (spec §2.4): ``templates: imagenet7``, the reference's frozen classifier (the 7-template ImageNet
ensemble on ImageNet and its variants, the CoOp custom template elsewhere); a dataset without that set (the toy
datasets) uses the suite's set (:mod:`clipbench.recipes`). The README's better "a photo of a {}." variant is not
the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipbench.devices import host_float
from clipbench.errors import ConfigError
from clipbench.methods.base import (
    EvalTarget,
    FeatureSet,
    FitTask,
    Inputs,
    Method,
    MethodConfig,
    ViewNeed,
    ViewRecipe,
    check_crop_scale,
    text_recipe,
)
from clipbench.methods.work import FP32, Arch, CellShape

LR_GRID = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)  # reference search_lr grid
LAMBDA_GRID = (10.0, 1.0, 0.1, 0.01, 0.001, 1e-4, 0.0)


@dataclass(frozen=True)
class ProlipConfig(MethodConfig):
    lr: float = 1e-5  # Adam learning rate (reference headline lr_v)
    eps: float = 1e-4  # Adam epsilon (reference)
    steps: int = 300  # full-batch iterations = cosine T_max (reference train_epoch)
    lambda_rule: Literal["1/N", "1/N^2", "fixed"] = "1/N"  # penalty weight: 1/shots, 1/shots^2 or lambda_value
    lambda_value: float = 0.0  # used only with lambda_rule "fixed"
    select_on_val: bool = False  # few-shot-validation variant: grid-search (lr, lambda) on the val set
    lr_grid: tuple[float, ...] = LR_GRID
    lambda_grid: tuple[float, ...] = LAMBDA_GRID
    templates: str | None = text_recipe("imagenet7")  # reference text classifier (spec §2.4; ProLIP datasets/*.py)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # RandomResizedCrop scale of the cached views (reference)

    def validate(self, where: str) -> None:
        check_crop_scale(self.crop_scale, where)
        if self.steps <= 0:
            raise ConfigError(f"{where}.steps: must be positive, got {self.steps}")
        if self.eps <= 0:
            raise ConfigError(f"{where}.eps: must be positive, got {self.eps}")
        for name in ("lr", "lambda_value"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        if not self.lr_grid or not self.lambda_grid or min(self.lr_grid + self.lambda_grid) < 0:
            raise ConfigError(f"{where}: lr_grid and lambda_grid must be non-empty lists of values >= 0")

    def penalty_weight(self, shots: int) -> float:
        """Lambda of the validation-free setting for ``shots`` images per class."""
        if self.lambda_rule == "1/N":
            return 1.0 / shots
        if self.lambda_rule == "1/N^2":
            return 1.0 / shots**2
        return self.lambda_value


class Projection(nn.Module):
    """A trainable copy of the visual projection: ViT ``x @ weight``; ResNet ``linear(x, weight, bias)`` with the
    bias a frozen buffer (``bias is None`` marks the ViT form)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())

    @classmethod
    def from_visual(cls, visual: nn.Module) -> Projection:
        """Copy the projection of an open_clip image tower (ViT ``proj``; ResNet ``attnpool.c_proj``)."""
        if hasattr(visual, "attnpool"):
            c_proj = visual.attnpool.c_proj
            return cls(c_proj.weight, c_proj.bias)
        return cls(visual.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return x @ self.weight
        return F.linear(x, self.weight, self.bias)


def penalty(weight: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """``||W - W0||_F^2``: the sum (not the mean) of squared element differences."""
    return (weight - initial).pow(2).sum()


def projected_logits(proj: Projection, x: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * F.normalize(proj(x.float()), dim=-1) @ text.T


def train_projection(
    initial: Projection,
    train: FeatureSet,
    text: torch.Tensor,
    scale: float,
    lr: float,
    lam: float,
    steps: int,
    eps: float,
) -> tuple[Projection, dict[str, float]]:
    """Train a copy of ``initial`` with Adam + per-iteration cosine, one full-batch step per cached view."""
    proj = Projection(initial.weight, initial.bias)
    w0 = initial.weight.detach()
    opt = torch.optim.Adam([proj.weight], lr=lr, eps=eps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    # normal tensors even where the caches were built in inference mode (autograd must save them)
    views, text = train.view_stack().float().clone(), text.float().clone()
    ce = reg = torch.tensor(float("nan"))
    for step in range(steps):
        ce = F.cross_entropy(projected_logits(proj, views[step % len(views)], text, scale), train.labels)
        reg = penalty(proj.weight, w0)
        opt.zero_grad(set_to_none=True)
        (ce + lam * reg).backward()
        opt.step()
        sched.step()
    return proj, {
        "final_ce": host_float(ce),
        "final_penalty": host_float(reg),
        "final_loss": host_float(ce + lam * reg),
    }


@torch.no_grad()
def accuracy(proj: Projection, data: FeatureSet, text: torch.Tensor, scale: float) -> float:
    return host_float((projected_logits(proj, data.plain, text, scale).argmax(1) == data.labels).float().mean())


class Prolip(Method):
    """Visual projection fine-tuning with a regulariser towards the pre-trained projection."""

    name = "prolip"
    requires = Inputs.PRE_PROJ_FEATURES
    uses_backbone = True
    Config = ProlipConfig
    smoke = {"steps": 20}  # tiny-run overrides (tests, bench): see Method.smoke

    @classmethod
    def view_need(cls, config: ProlipConfig, dataset: str, shots: int) -> ViewNeed:
        return ViewNeed(ViewRecipe(config.crop_scale), config.steps, pre=True)  # one view per step

    @classmethod
    def state_bytes(cls, config: ProlipConfig, cell: CellShape, arch: Arch) -> int:
        return FP32 * arch.image_width * arch.embed_dim

    selection = "none (lr 1e-5, lambda = 1/N); optional (lr, lambda) grid search on the few-shot validation set"

    @classmethod
    def selects(cls, config: ProlipConfig) -> str:
        return "lr, λ" if config.select_on_val else ""

    def __init__(self, config: ProlipConfig) -> None:
        super().__init__(config)
        self.proj: Projection | None = None

    def fit(self, task: FitTask) -> dict[str, float | int]:
        if task.backbone is None:
            raise ValueError("ProLIP needs FitTask.backbone to copy the pre-trained visual projection from")
        cfg = self.config
        initial = Projection.from_visual(task.backbone.model.visual)
        if cfg.select_on_val:
            self.proj, info = self._search(task, initial)
            return info
        lam = cfg.penalty_weight(task.shots)
        self.proj, info = train_projection(
            initial, task.train, task.text_weights, task.logit_scale, cfg.lr, lam, cfg.steps, cfg.eps
        )
        return {**info, "lr": cfg.lr, "lambda": lam, "views": len(task.train.view_stack())}

    def _search(self, task: FitTask, initial: Projection) -> tuple[Projection, dict[str, float]]:
        """Train every (lr, lambda) of the grid; keep the first strict maximum of few-shot val accuracy."""
        cfg = self.config
        best: tuple[float, Projection, dict[str, float]] = (-math.inf, initial, {})
        for lr in cfg.lr_grid:
            for lam in cfg.lambda_grid:
                proj, info = train_projection(
                    initial, task.train, task.text_weights, task.logit_scale, lr, lam, cfg.steps, cfg.eps
                )
                acc = accuracy(proj, task.val, task.text_weights, task.logit_scale)
                if acc > best[0]:
                    best = (acc, proj, {**info, "lr": lr, "lambda": lam, "val_acc": acc})
        return best[1], {**best[2], "views": len(task.train.view_stack())}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        if self.proj is None:
            raise RuntimeError("ProLIP.predict called before fit or load_state_dict")
        return projected_logits(self.proj, x, target.text_weights, target.logit_scale)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"proj.weight": self.proj.weight.detach().clone()}
        if self.proj.bias is not None:
            state["proj.bias"] = self.proj.bias.clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.proj = Projection(state["proj.weight"], state.get("proj.bias"))
