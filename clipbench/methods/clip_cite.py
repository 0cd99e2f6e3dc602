"""CLIP-CITE: fully fine-tuned CLIP for few-shot learning (Liu et al., arXiv 2407.04003 v1; no public code).

Trainable (spec §6.9): every parameter of both encoders plus a classifier ``W`` (``C_train x D``) initialised
with the normalised text embeddings of ``prompt_template`` ("a photo of a {}") for the training classes. A
frozen teacher (the original backbone, never modified) provides ``L_VLD`` targets.

Losses on a batch of B augmented images (student image features ``f``, all normalised):

* ``L_DVA = CE(dva_scale * cos(f, W), y)`` (temperature ``tau = 1 / dva_scale``; the text encoder takes no part);
* ``L_SCL``: InfoNCE between each image and the prompt of its class through the student text encoder, scaled by
  ``scl_scale``; the positive stays in the denominator and other in-batch items of the same class are masked
  out; image->text and text->image terms averaged;
* ``L_VLD``: KL divergence between teacher and student softmax distributions over the class prompts
  (``vld_texts``: every training class, or the classes in the batch), logits ``vld_scale * cos``. The paper
  prints ``KL(p_student || p_teacher)``; the default ``kl_direction="teacher_student"`` is the conventional
  distillation ``KL(p_teacher || p_student) = sum p_teacher (log p_teacher - log p_student)``.

Total ``L_DVA + 0.7 L_SCL + 0.1 L_VLD``. AdamW lr 5e-6 with cosine annealing, 20 epochs, batch 32 (EuroSAT 16,
ImageNet 64), RandomResizedCrop only (no flip). Inference: WiSE-FT weight interpolation of every parameter
``alpha * theta_ft + (1 - alpha) * theta_zs`` with ``alpha = 0.5`` (``W`` is interpolated with its initial
value likewise). Base classes are scored by the interpolated ``W`` (``base_classifier="W"``) or by the target's
prompts through the interpolated text encoder (``"text"``); classes not trained on (new classes,
other datasets) always use the text route, so the method is not class-specific.

Decisions on what the paper leaves UNSPECIFIED (each a config field): mean over the batch for all three terms
(the paper writes sums for L_DVA and L_VLD); temperatures 1/100 (CLIP's logit scale); the positive in the SCL
denominator; teacher texts = all training-class prompts; weight decay 0.1 on every tensor (FLYP / WiSE-FT
practice); AdamW betas (0.9, 0.999), eps 1e-8; no warm-up; cosine stepped per iteration down to 0;
RandomResizedCrop scale (0.08, 1) (torchvision's default); W initialised normalised; the last epoch is kept;
Dassl batching (the last partial batch dropped when the set holds at least one batch); base classes via W;
the fixed similarity scales make CLIP's ``logit_scale`` parameter receive no gradient. ``prompt_template=None``
trains on the task's templates instead; ``frozen_pattern`` can keep parameters frozen (default: none).

Storage: the state holds the fine-tuning delta of every trained parameter (``theta_ft - theta_zs``), matrices as
int8 rows with an fp32 scale per row (the token embedding, ``low_bit_pattern``, at 4 bits), vectors in fp32
(:func:`~clipbench.methods.training.compress_delta`), plus W and its initial value: about 142 MB per ViT-B/16
cell (1,000 classes) instead of 599 MB of fp32 weights. A row's step is ``max|delta_row| / 127`` (``/ 7`` at
4 bits); the delta of 20 epochs at lr 5e-6 is small, so the WiSE-FT weights
``theta_zs + alpha * delta`` are within ``alpha * step / 2`` of the unquantised ones. ``runtime.keep_checkpoints``
also keeps the full fp32 fine-tuned parameters per cell (``checkpoint.safetensors``; never read by evaluation).

Text recipe: ``prompt_template`` ("a photo of a {}", paper Eq. 2, for every class of every dataset; no template
set of ``templates.json`` holds it) builds the training prompts, W's initialisation and the text route at
inference, as in the paper; ``prompt_template: null`` uses the label space's templates for all three, i.e. the
set of ``templates`` (the shared recipe field, default the suite's ``text.template_set``;
:mod:`clipbench.recipes`). The frozen text classifier of the recipe's set is read but not scored with.

Deviations: fp32 master weights with bf16 autocast on CUDA (``runtime.precision: amp``); CPU runs fp32. Encoders
stay in eval mode while training (ResNet BatchNorm statistics frozen).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from clipbench.data import metadata
from clipbench.data.base import LabelSpace
from clipbench.devices import host_floats, host_state, to_host
from clipbench.errors import ConfigError
from clipbench.methods.base import (
    EvalTarget,
    FitTask,
    MethodConfig,
    check_by_dataset,
    check_crop_scale,
    frozen_by_dataset,
)
from clipbench.methods.training import (
    ImageFineTuning,
    MixedPrecision,
    class_text_features,
    compress_delta,
    device_of,
    expand_delta,
    image_epochs,
    image_scorer,
    set_lr,
    text_scorer,
    tokenize_prompts,
)
from clipbench.methods.work import FP32, Arch, CellShape, EncoderWork, steps


@dataclass(frozen=True)
class ClipCiteConfig(MethodConfig):
    prompt_template: str | None = "a photo of a {}"  # training prompts, W init and inference text route (paper
    # Eq. 2); None: the label space's templates (the ``templates`` recipe, default the suite's set, ensembled)
    frozen_pattern: str = ""  # anchored regex of parameters kept frozen; "" = full fine-tuning (paper)
    lambda_scl: float = 0.7
    eta_vld: float = 0.1
    dva_scale: float = 100.0  # 1 / tau of L_DVA (UNSPECIFIED)
    scl_scale: float = 100.0  # similarity scale of L_SCL (UNSPECIFIED)
    vld_scale: float = 100.0  # similarity scale of both L_VLD distributions (UNSPECIFIED)
    vld_texts: Literal["all_classes", "batch"] = "all_classes"  # UNSPECIFIED
    kl_direction: Literal["teacher_student", "student_teacher"] = "teacher_student"  # paper prints the latter
    reduction: Literal["mean", "sum"] = "mean"  # over the batch, all three terms (paper: sums)
    lr: float = 5e-6
    weight_decay: float = 0.1  # UNSPECIFIED
    betas: tuple[float, float] = (0.9, 0.999)  # UNSPECIFIED
    eps: float = 1e-8  # UNSPECIFIED
    warmup_steps: int = 0  # linear warm-up, in units of ``schedule_step`` (UNSPECIFIED)
    schedule_step: Literal["iteration", "epoch"] = "iteration"  # where the cosine is stepped (UNSPECIFIED)
    epochs: int = 20
    batch_size: int = 32  # EuroSAT 16, ImageNet 64 (in by_dataset)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # UNSPECIFIED
    flip: bool = False
    wise_alpha: float = 0.5  # weight of the fine-tuned parameters at inference
    base_classifier: Literal["W", "text"] = "W"  # UNSPECIFIED
    # parameters whose fine-tuning delta is stored at 4 bits instead of 8 (storage, not training): the token
    # embedding, 25 M values whose delta is mostly AdamW's uniform decay of tokens absent from the prompts
    low_bit_pattern: str = r"^token_embedding\.weight$"
    by_dataset: dict[str, dict[str, Any]] = field(
        default_factory=lambda: frozen_by_dataset({"eurosat": {"batch_size": 16}, "imagenet": {"batch_size": 64}})
    )  # per-dataset field overrides

    def validate(self, where: str) -> None:
        for name, value in {"epochs": self.epochs, "batch_size": self.batch_size}.items():
            if value <= 0:
                raise ConfigError(f"{where}.{name}: must be positive, got {value}")
        for name in ("lambda_scl", "eta_vld", "weight_decay", "warmup_steps", "lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.wise_alpha <= 1.0:
            raise ConfigError(f"{where}.wise_alpha: must be in [0, 1], got {self.wise_alpha}")
        check_crop_scale(self.crop_scale, where)
        if self.frozen_pattern and not (self.frozen_pattern.startswith("^") and self.frozen_pattern.endswith("$")):
            raise ConfigError(
                f"{where}.frozen_pattern: must be empty or anchored with ^...$, got {self.frozen_pattern!r}"
            )
        if self.prompt_template is not None:
            metadata.check_templates("clip_cite", (self.prompt_template,), f"{where}.prompt_template")
        check_by_dataset(self, where)


def cosine_lr(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``base_lr`` to 0 at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def scl_loss(feats: torch.Tensor, texts: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-item symmetric supervised contrastive loss ``[B]``: row i pairs image i with its class text; other items
    of the same class are masked out of both denominators, the positive stays in."""
    sims = scale * feats @ texts.T
    same = labels[:, None] == labels[None, :]
    mask = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    sims = sims.masked_fill(mask, float("-inf"))
    target = torch.arange(len(labels), device=labels.device)
    return 0.5 * (F.cross_entropy(sims, target, reduction="none") + F.cross_entropy(sims.T, target, reduction="none"))


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, direction: str) -> torch.Tensor:
    """Per-item KL ``[B]``: ``teacher_student`` = KL(p_t || p_s); ``student_teacher`` = KL(p_s || p_t)."""
    log_s, log_t = F.log_softmax(student_logits, dim=-1), F.log_softmax(teacher_logits, dim=-1)
    if direction == "teacher_student":
        return (log_t.exp() * (log_t - log_s)).sum(-1)
    return (log_s.exp() * (log_s - log_t)).sum(-1)


def make_student(model: torch.nn.Module, frozen_pattern: str) -> torch.nn.Module:
    """A trainable eval-mode copy of ``model``: every parameter except those matching ``frozen_pattern``."""
    student = copy.deepcopy(model).eval().requires_grad_(True)
    if frozen_pattern:
        frozen = re.compile(frozen_pattern)
        for name, param in student.named_parameters():
            param.requires_grad_(not frozen.fullmatch(name))
    return student


def training_prompts(cfg: ClipCiteConfig, space: LabelSpace) -> list[list[str]]:
    """Per class, the prompts of training and of W's initialisation."""
    if cfg.prompt_template is None:
        return space.prompts()
    return [[cfg.prompt_template.format(name.replace("_", " "))] for name in space.classnames]


class ClipCite(ImageFineTuning):
    """Full fine-tuning with a learnable classifier, contrastive alignment, teacher distillation, WiSE-FT.

    ``state`` holds the compressed fine-tuning delta of each parameter (``model.<name>.*``), the classifier ``W``
    and its initial value ``W0``; the prediction model is their WiSE-FT interpolation with the target backbone's
    zero-shot weights.
    """

    name = "clip_cite"
    Config = ClipCiteConfig
    smoke = {"epochs": 2}  # tiny-run overrides (tests, bench): see Method.smoke

    @classmethod
    def training_work(cls, config: ClipCiteConfig, cell: CellShape, arch: Arch) -> EncoderWork:
        """Student image passes, the frozen teacher's image pass, and per step the in-batch and all-class prompts
        (``vld_texts``) through the trained text encoder; every unfrozen parameter has AdamW state."""
        n = steps(cell.images, config.batch_size, config.epochs)
        per_step = cell.classes if config.vld_texts == "all_classes" else min(config.batch_size, cell.classes)
        trained = arch.params - arch.params_matching(config.frozen_pattern)
        extra = EncoderWork(
            frozen_images=n * config.batch_size,
            prompts=n * per_step,
            step_prompts=per_step,
            trained_params=trained,
        )
        return super().training_work(config, cell, arch) + extra

    @classmethod
    def state_bytes(cls, config: ClipCiteConfig, cell: CellShape, arch: Arch) -> int:
        """The compressed delta (int8 rows + fp32 row scales, low-bit rows at 4 bits, vectors fp32), W and W0."""
        frozen = re.compile(config.frozen_pattern) if config.frozen_pattern else None
        low = re.compile(config.low_bit_pattern) if config.low_bit_pattern else None
        total = 2 * FP32 * cell.classes * arch.embed_dim
        for name, shape in arch.shapes:
            if frozen and frozen.fullmatch(name):
                continue
            if len(shape) < 2:
                total += FP32 * math.prod(shape)
                continue
            bits = 4 if low and low.fullmatch(name) else 8
            total += math.prod(shape) * bits // 8 + FP32 * shape[0]
        return total

    def fit(self, task: FitTask) -> dict[str, float | int]:
        cfg, device = self.start_fit(task)
        teacher = (
            task.backbone.model
            if device_of(task.backbone.model) == device
            else copy.deepcopy(task.backbone.model).to(device)
        )
        student = make_student(teacher, cfg.frozen_pattern)
        tokens = tokenize_prompts(task.backbone.tokenizer, training_prompts(cfg, task.space), device)
        tokens = tokens.view(len(task.space), -1, tokens.shape[-1])  # [C, T, L]
        with torch.no_grad():  # W at initialisation: the (template-ensembled) normalised text embeddings [C, D]
            w0 = class_text_features(teacher, tokens.flatten(0, 1), len(task.space))
        classifier = torch.nn.Parameter(w0.clone())
        diagnostics = self._train(task, cfg, student, teacher, classifier, tokens, device)
        trained = [n for n, p in student.named_parameters() if p.requires_grad]
        delta = compress_delta(student, teacher, trained, cfg.low_bit_pattern)
        self.state = {f"model.{k}": v for k, v in host_state(delta).items()}
        self.state.update(W=to_host(classifier).clone(), W0=to_host(w0).clone())
        self.full = {n: p for n, p in student.named_parameters() if p.requires_grad}
        self.model = None
        return diagnostics

    def _train(
        self, task: FitTask, cfg: ClipCiteConfig, student, teacher, classifier, tokens, device
    ) -> dict[str, float]:
        amp = MixedPrecision(task.runtime.precision, device)
        batch_size = cfg.batch_size
        n = len(task.train_images)
        iters = n // batch_size if n >= batch_size else 1
        total = cfg.epochs * iters if cfg.schedule_step == "iteration" else cfg.epochs
        params = [*(p for p in student.parameters() if p.requires_grad), classifier]
        opt = torch.optim.AdamW(
            params,
            lr=cfg.lr,
            betas=cfg.betas,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            fused=device.type in ("cpu", "cuda"),
        )
        with torch.no_grad():
            teacher_text = class_text_features(teacher, tokens.flatten(0, 1), len(tokens))
        history, step = [], 0
        for epoch, batches in enumerate(image_epochs(task, student, cfg.epochs, batch_size, cfg.crop_scale, cfg.flip)):
            losses = []
            for pixels, labels in batches:
                set_lr(
                    opt, cosine_lr(step if cfg.schedule_step == "iteration" else epoch, total, cfg.lr, cfg.warmup_steps)
                )
                with amp.autocast():
                    terms = self._losses(
                        cfg, student, teacher, classifier, tokens, teacher_text, pixels.to(device), labels.to(device)
                    )
                    loss = terms[0] + cfg.lambda_scl * terms[1] + cfg.eta_vld * terms[2]
                amp.step(loss, opt)
                losses.append(host_floats(torch.stack([loss.detach(), *(t.detach() for t in terms)])))
                step += 1
            history.append(np.mean(losses, axis=0))
        first, last = history[0], history[-1]
        return {
            "first_epoch_loss": float(first[0]),
            "final_loss": float(last[0]),
            "final_dva": float(last[1]),
            "final_scl": float(last[2]),
            "final_vld": float(last[3]),
            "epochs": cfg.epochs,
            "batch_size": batch_size,
            "amp": float(amp.enabled),
            "trainable_params": sum(p.numel() for p in params),
        }

    @staticmethod
    def _losses(cfg: ClipCiteConfig, student, teacher, classifier, tokens, teacher_text, pixels, labels):
        """``(L_DVA, L_SCL, L_VLD)`` of one batch."""
        feats = F.normalize(student.encode_image(pixels).float(), dim=-1)
        dva = F.cross_entropy(cfg.dva_scale * feats @ F.normalize(classifier, dim=-1).T, labels, reduction="none")
        classes = torch.arange(len(tokens), device=labels.device)
        if cfg.vld_texts == "batch":
            classes = labels.unique()
        text = class_text_features(student, tokens[classes].flatten(0, 1), len(classes))
        rows = torch.searchsorted(classes, labels)
        scl = scl_loss(feats, text[rows], labels, cfg.scl_scale)
        with torch.no_grad():
            teacher_feats = F.normalize(teacher.encode_image(pixels).float(), dim=-1)
            teacher_logits = cfg.vld_scale * teacher_feats @ teacher_text[classes].T
        vld = kl_loss(cfg.vld_scale * feats @ text.T, teacher_logits, cfg.kl_direction)
        reduce = torch.mean if cfg.reduction == "mean" else torch.sum
        return reduce(dva), reduce(scl), reduce(vld)

    def tuned_parameters(self, target: EvalTarget) -> dict[str, torch.Tensor]:
        """WiSE-FT: every fine-tuned parameter interpolated with the backbone's zero-shot value
        (``theta_zs + alpha * delta``)."""
        zero_shot, alpha = dict(target.backbone.model.named_parameters()), self.target_config(target).wise_alpha
        shapes = {name: p.shape for name, p in zero_shot.items()}
        return {
            name: zero_shot[name].detach() + alpha * delta.to(zero_shot[name].device)
            for name, delta in expand_delta(self._model_state(), shapes).items()
        }

    def _model_state(self) -> dict[str, torch.Tensor]:
        return {k.removeprefix("model."): v for k, v in self.state.items() if k.startswith("model.")}

    def checkpoint(self) -> dict[str, torch.Tensor]:
        """The full fp32 fine-tuned parameters of the last ``fit`` (``runtime.keep_checkpoints``)."""
        return host_state(getattr(self, "full", {}))

    def _classifier(self, target: EvalTarget) -> torch.Tensor | None:
        """Interpolated W rows of the target classes, or None when the text route must be used."""
        cfg = self.target_config(target)
        if cfg.base_classifier != "W":
            return None
        index = {cid: i for i, cid in enumerate(target.train_space.class_ids)}
        if any(cid not in index for cid in target.space.class_ids):
            return None
        w = torch.lerp(self.state["W0"], self.state["W"], cfg.wise_alpha).to(target.backbone.device)
        return F.normalize(w[[index[c] for c in target.space.class_ids]], dim=-1)

    def predictor(self, target: EvalTarget) -> Callable[[torch.Tensor], torch.Tensor]:
        model, amp = self.scoring(target)
        classifier = self._classifier(target)
        if classifier is not None:
            return image_scorer(model, classifier, target.logit_scale, amp)
        prompts = training_prompts(self.target_config(target), target.space)  # the same text recipe as training
        return text_scorer(model, target.backbone.tokenizer, prompts, target.logit_scale, amp)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = {"W", "W0"} - set(state)
        if missing:
            raise ValueError(f"clip_cite state lacks {sorted(missing)}; the cell is incomplete - retrain it")
        super().load_state_dict(state)
