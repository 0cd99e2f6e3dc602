"""ClipFit: fine-tuning CLIP without extra parameters (Li et al., EMNLP'24, arXiv 2409.16718; minglllli/CLIPFit).

Trainable (spec §6.8), selected by anchored name patterns on the open_clip model: the bias of the second MLP
layer in every text block (``transformer.resblocks.{i}.mlp.c_proj.bias``; 12 x 512 = 6,144 on ViT-B/16) and
weight + bias of every image-encoder LayerNorm (``visual.ln_pre``, ``visual.ln_post``, ``ln_1``/``ln_2`` of
every visual block; 26 x 2 x 768 = 39,936 on ViT-B/16). On ResNets the image pattern matches nothing (the
reference substring ``ln`` matches no BatchNorm), so only the 6,144 text biases train.

Forward: the class text features are recomputed at every step from the hand-crafted prompts through the text
encoder with the trainable biases; image features come from the image encoder with the trainable LayerNorms;
logits ``s * cos(f, t_c)`` with the backbone's logit scale ``s``. Loss:
``CE + lambda * (1 - mean_c cos(t_c, t0_c))`` where ``t0`` are the frozen original's text features of the same
prompts (computed once; cosine eps 1e-7).

lambda (README; the released trainer hard-codes 8): base-to-new 8 for all datasets; few-shot 8 for DTD and
SUN397, 2 otherwise (``lambda_few_shot`` with ``by_dataset`` entries); cross-dataset / domain generalization
UNSPECIFIED. The method reads which classes it trains on from ``FitTask.subset``: ``"base"`` ->
``lambda_base2new``; ``"all"`` -> ``lambda_few_shot``. ``lam`` overrides the rule for every cell; the paper suite
sets ``lam: 8`` (the trainer's value) for cross_dataset and domain_generalization only, so the transfer source's
16-shot all-class cell is trained apart from its few-shot cell (``method_params.<method>.<protocol>``).

Optimisation (Dassl, spec §2.6/2.7): SGD lr 2e-3, momentum 0.9, weight decay 5e-4 on every trainable tensor,
batch 32, one constant warm-up epoch at 1e-5 then cosine stepped per epoch; 10 epochs for ImageNet and
Food101, 100 otherwise (``epochs`` with ``by_dataset`` entries, keyed by registry dataset key); last epoch kept,
nothing selected. Augmentation: RandomResizedCrop(scale 0.08-1, bicubic) + horizontal flip, drawn from a generator
seeded by the task seed. Images run through the encoders at every step (no feature cache).

Prompts: ``FitTask.space`` / ``EvalTarget.space`` templates of the method's text recipe, ``templates: clipfit``
by default: ClipFit's own CUSTOM templates, equal to CoOp's except DTD (``a photo of a {}, a type of texture.``
instead of ``{} texture.``); a dataset without that set (the toy datasets) uses the suite's set
(:mod:`clipbench.recipes`). At transfer time the target's templates build the target classifier, as in the
reference.

Deviations: fp32 master weights with bf16 autocast on CUDA (``runtime.precision: amp``; fp16 + loss scaling where
bf16 is unsupported) instead of the reference's fp16 weights; CPU runs fp32. The encoders stay in eval mode while
training, so ResNet BatchNorm running statistics are not updated (the reference's train mode would update
them; all reported ClipFit runs use ViT-B/16, which has no BatchNorm). Several templates per class (other
template sets) are ensembled as in the zero-shot classifier; the reference uses one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipbench.devices import host_floats, to_host
from clipbench.errors import ConfigError
from clipbench.methods.base import (
    EvalTarget,
    FitTask,
    MethodConfig,
    check_by_dataset,
    check_crop_scale,
    frozen_by_dataset,
    text_recipe,
)
from clipbench.methods.training import (
    ImageFineTuning,
    MixedPrecision,
    class_text_features,
    dassl_lr,
    device_of,
    freeze_except,
    image_epochs,
    set_lr,
    text_scorer,
    tokenize_prompts,
)
from clipbench.methods.work import FP32, Arch, CellShape, EncoderWork, steps

TEXT_PATTERN = r"^transformer\.resblocks\.\d+\.mlp\.c_proj\.bias$"
IMAGE_PATTERN = r"^visual\.(ln_pre|ln_post|transformer\.resblocks\.\d+\.ln_[12])\.(weight|bias)$"


@dataclass(frozen=True)
class ClipFitConfig(MethodConfig):
    text_pattern: str = TEXT_PATTERN  # trainable text parameters (anchored regex on open_clip names)
    image_pattern: str = IMAGE_PATTERN  # trainable image parameters
    lam: float | None = None  # if set: lambda for every cell, overriding the protocol rule below
    lambda_base2new: float = 8.0  # README: base-to-new, every dataset
    lambda_few_shot: float = 2.0  # README: few-shot (DTD, SUN397: 8, in by_dataset)
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_lr: float = 1e-5  # one constant warm-up epoch (counted in ``epochs``)
    batch_size: int = 32
    epochs: int = 100  # Dassl configs (ImageNet, Food101: 10, in by_dataset)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # Dassl RandomResizedCrop scale
    flip: bool = True
    templates: str | None = text_recipe("clipfit")  # ClipFit's CUSTOM templates (spec §2.4; differ on DTD)
    by_dataset: dict[str, dict[str, Any]] = field(
        default_factory=lambda: frozen_by_dataset(
            {
                "imagenet": {"epochs": 10},
                "food101": {"epochs": 10},
                "dtd": {"lambda_few_shot": 8.0},
                "sun397": {"lambda_few_shot": 8.0},
            }
        )
    )  # per-dataset field overrides

    def validate(self, where: str) -> None:
        for name, value in {"epochs": self.epochs, "batch_size": self.batch_size}.items():
            if value <= 0:
                raise ConfigError(f"{where}.{name}: must be positive, got {value}")
        lambdas = {
            "lambda_base2new": self.lambda_base2new,
            "lambda_few_shot": self.lambda_few_shot,
            "lam": 0.0 if self.lam is None else self.lam,
        }
        for name, value in lambdas.items():
            if value < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0, got {value}")
        check_crop_scale(self.crop_scale, where)
        for name in ("text_pattern", "image_pattern"):
            pattern = getattr(self, name)
            if not (pattern.startswith("^") and pattern.endswith("$")):
                raise ConfigError(f"{where}.{name}: must be anchored with ^...$, got {pattern!r}")
        check_by_dataset(self, where)


def clipfit_lambda(cfg: ClipFitConfig, subset: str) -> float:
    """The regularisation weight of a cell training on ``subset`` ("all" or "base") with the dataset-resolved
    ``cfg``."""
    if cfg.lam is not None:
        return cfg.lam
    return cfg.lambda_base2new if subset == "base" else cfg.lambda_few_shot


class ClipFit(ImageFineTuning):
    """Text FFN biases and image LayerNorms fine-tuned with a text-feature regulariser."""

    name = "clipfit"
    Config = ClipFitConfig
    smoke = {"epochs": 2}  # tiny-run overrides (tests, bench): see Method.smoke

    @classmethod
    def training_work(cls, config: ClipFitConfig, cell: CellShape, arch: Arch) -> EncoderWork:
        """Image passes, plus every training class's prompt through the text encoder each step (its biases train)."""
        n = steps(cell.images, config.batch_size, config.epochs)
        text = EncoderWork(prompts=n * cell.classes, step_prompts=cell.classes)
        return super().training_work(config, cell, arch) + text

    @classmethod
    def state_bytes(cls, config: ClipFitConfig, cell: CellShape, arch: Arch) -> int:
        return FP32 * (arch.params_matching(config.text_pattern) + arch.params_matching(config.image_pattern))

    def fit(self, task: FitTask) -> dict[str, float | int]:
        cfg, device = self.start_fit(task)
        model = copy.deepcopy(task.backbone.model).to(device).eval()
        trainable = set(freeze_except(model, [cfg.text_pattern, cfg.image_pattern]))
        lam = clipfit_lambda(cfg, task.subset)
        amp = MixedPrecision(task.runtime.precision, device)
        history = self._train(task, cfg, model, lam, amp)
        self.model = model.requires_grad_(False)
        self.state = {n: to_host(p).clone() for n, p in model.named_parameters() if n in trainable}
        return {
            "first_epoch_loss": float(history[0][0]),
            "final_loss": float(history[-1][0]),
            "final_ce": float(history[-1][1]),
            "final_text_reg": float(history[-1][2]),
            "lambda": lam,
            "epochs": cfg.epochs,
            "trainable_params": sum(v.numel() for v in self.state.values()),
            "amp": float(amp.enabled),
        }

    def _train(
        self, task: FitTask, cfg: ClipFitConfig, model: torch.nn.Module, lam: float, amp: MixedPrecision
    ) -> list[np.ndarray]:
        """Dassl SGD over the trainable tensors of ``model``; per epoch the mean (loss, CE, regulariser)."""
        device = device_of(model)
        tokens = tokenize_prompts(task.backbone.tokenizer, task.space.prompts(), device)
        with torch.no_grad():
            t0 = class_text_features(model, tokens, len(task.space))
        opt = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        history = []
        epochs = image_epochs(task, model, cfg.epochs, cfg.batch_size, cfg.crop_scale, cfg.flip)
        for epoch, batches in enumerate(epochs):
            set_lr(opt, dassl_lr(epoch, cfg.lr, cfg.epochs, warmup_lr=cfg.warmup_lr))
            losses = []
            for pixels, labels in batches:
                with amp.autocast():
                    ce, reg = self._losses(model, tokens, t0, pixels.to(device), labels.to(device), task.logit_scale)
                    loss = ce + lam * reg
                amp.step(loss, opt)
                losses.append(host_floats(torch.stack([loss.detach(), ce.detach(), reg.detach()])))
            history.append(np.mean(losses, axis=0))
        return history

    @staticmethod
    def _losses(model, tokens, t0, pixels, labels, scale) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the current text classifier and the text-feature regulariser ``1 - mean cos``."""
        text = class_text_features(model, tokens, len(t0))
        feats = F.normalize(model.encode_image(pixels).float(), dim=-1)
        ce = F.cross_entropy(scale * feats @ text.T, labels)
        reg = 1 - F.cosine_similarity(text, t0, dim=-1, eps=1e-7).mean()
        return ce, reg

    def tuned_parameters(self, target: EvalTarget) -> dict[str, torch.Tensor]:
        return self.state

    def predictor(self, target: EvalTarget) -> Callable[[torch.Tensor], torch.Tensor]:
        model, amp = self.scoring(target)
        return text_scorer(model, target.backbone.tokenizer, target.space.prompts(), target.logit_scale, amp)
