"""Shared optimisation semantics used by several methods (spec §2.6, §2.7), and the encoder-level helpers and base
class of the image fine-tuning methods (ClipFit, CLIP-CITE)."""

from __future__ import annotations

import abc
import contextlib
import copy
import itertools
import math
import re
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from clipbench.data.loader import Augment, pixel_stats, training_batches
from clipbench.devices import to_host
from clipbench.methods.base import EvalTarget, FitTask, Inputs, Method, MethodConfig
from clipbench.methods.work import Arch, CellShape, EncoderWork, TargetShape, steps


def dassl_lr(epoch: int, base_lr: float, max_epoch: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """Dassl's learning rate for 0-indexed ``epoch``: constant warm-up, then cosine stepped once per epoch.

    With one warm-up epoch: e=0 -> ``warmup_lr``; e>=1 -> ``base_lr * (1 + cos(pi * (e - 1) / max_epoch)) / 2``.
    ``max_epoch`` counts the warm-up epoch, so the last epoch never reaches 0.
    """
    if epoch < warmup_epochs:
        return warmup_lr
    return base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / max_epoch))


def dassl_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled mini-batch indices for one epoch; the last partial batch is dropped only if ``n >= batch_size``."""
    order = torch.randperm(n, generator=generator)
    drop_last = n >= batch_size
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def image_epochs(
    task: FitTask, model: torch.nn.Module, epochs: int, batch_size: int, scale: tuple[float, float], flip: bool
) -> Iterator[Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Per epoch, its augmented ``(pixels, labels)`` training batches (consume each epoch before the next).

    Dassl's shuffling (:func:`dassl_batches`, seeded by the task) and training transform, drawn from the task's
    seed; prepared by ``runtime.decode_workers`` worker processes (pinned for a GPU model) or in this process.
    """
    gen = torch.Generator().manual_seed(task.seed)
    plan = [list(dassl_batches(len(task.train_images), batch_size, gen)) for _ in range(epochs)]
    augment = Augment(task.backbone.image_size, scale, *pixel_stats(model), flip=flip)
    workers, pin = task.runtime.decode_workers, device_of(model).type == "cuda"
    rng = np.random.default_rng(task.seed)
    batches = training_batches(task.train_images, [b for e in plan for b in e], augment, rng, workers, pin)
    for epoch in plan:
        yield itertools.islice(batches, len(epoch))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def count_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---- encoder-level training (methods that run the CLIP encoders: ClipFit, CLIP-CITE) ----


class MixedPrecision:
    """fp32 master weights; with ``precision="amp"`` on CUDA, autocast to bf16 (fp16 with loss scaling where bf16
    is unsupported). CPU always runs fp32 (spec §2.5, §8 item 8)."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.enabled = precision == "amp" and device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype is torch.float16)

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.") if self.enabled else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=self.dtype) if self.enabled else contextlib.nullcontext()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def class_text_features(model: torch.nn.Module, tokens: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Differentiable class embeddings ``[C, D]`` from ``tokens`` ``[C*T, L]`` (class-major, T templates each):
    each prompt normalised, averaged over templates, normalised again (as the zero-shot classifier, spec §2.4)."""
    emb = F.normalize(model.encode_text(tokens).float(), dim=-1)
    return F.normalize(emb.view(n_classes, -1, emb.shape[-1]).mean(1), dim=-1)


def tokenize_prompts(tokenizer, prompts: list[list[str]], device: torch.device) -> torch.Tensor:
    """Tokens ``[C*T, L]`` of per-class prompt lists that all hold the same number ``T`` of templates."""
    if len({len(p) for p in prompts}) > 1:
        raise ValueError("every class needs the same number of prompt templates")
    return tokenizer([text for texts in prompts for text in texts]).to(device)


def freeze_except(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Freeze every parameter of ``model`` except those whose full name matches one of the anchored regexes;
    return the trainable names (in model order)."""
    compiled = [re.compile(p) for p in patterns]
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(any(c.fullmatch(name) for c in compiled))
        if param.requires_grad:
            names.append(name)
    return names


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def apply_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A frozen eval-mode copy of ``model`` with the named parameters replaced by ``state``."""
    tuned = copy.deepcopy(model).eval().requires_grad_(False)
    params = dict(tuned.named_parameters())
    for name, value in state.items():
        if name not in params or params[name].shape != value.shape:
            raise ValueError(
                f"saved parameter {name!r} {tuple(value.shape)} does not fit the backbone "
                f"({tuple(params[name].shape) if name in params else 'no such parameter'}); "
                "the cell was trained on another backbone - retrain it"
            )
        with torch.no_grad():
            params[name].copy_(value)
    return tuned


def text_scorer(
    model: torch.nn.Module, tokenizer, prompts: list[list[str]], logit_scale: float, amp: MixedPrecision
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Encode ``prompts`` through ``model``'s text encoder once; score pixel batches through its image encoder as
    ``logit_scale * cos(image, class text)`` (logits on the CPU)."""
    device = device_of(model)
    tokens = tokenize_prompts(tokenizer, prompts, device)
    with torch.no_grad(), amp.autocast():
        text = class_text_features(model, tokens, len(prompts))
    return image_scorer(model, text, logit_scale, amp)


def image_scorer(
    model: torch.nn.Module, classifier: torch.Tensor, logit_scale: float, amp: MixedPrecision
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Score pixel batches as ``logit_scale * cos(image, classifier rows)``; ``classifier`` rows are normalised."""
    device = device_of(model)
    classifier = classifier.to(device)

    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), amp.autocast():
            feats = F.normalize(model.encode_image(x.to(device)).float(), dim=-1)
        return to_host(logit_scale * feats @ classifier.T)

    return score


def quantize_rows(t: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed integer codes and fp32 per-row scales (row = first dimension, step = absmax / (2**(bits-1) - 1)) of
    a tensor of >= 2 dimensions; 4-bit codes are packed two per byte (uint8, last dimension padded to even)."""
    levels = 2 ** (bits - 1) - 1
    rows = t.detach().float().flatten(1)
    scale = rows.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / levels
    codes = torch.round(rows / scale[:, None])
    if bits == 8:
        return codes.to(torch.int8).view(t.shape), scale
    if bits != 4:
        raise ValueError(f"quantize_rows: bits must be 8 or 4, got {bits}")
    nibbles = (codes + 8).to(torch.uint8)
    if nibbles.shape[1] % 2:
        nibbles = F.pad(nibbles, (0, 1), value=8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, shape: torch.Size | None = None) -> torch.Tensor:
    """The fp32 tensor :func:`quantize_rows` encoded (each element within half a step of the original);
    ``shape`` is required for packed 4-bit codes."""
    if q.dtype == torch.int8:
        return (q.float().flatten(1) * scale[:, None]).view(q.shape)
    codes = torch.stack([q & 15, q >> 4], dim=-1).flatten(1).float() - 8
    width = math.prod(shape[1:])
    return (codes[:, :width] * scale[:, None]).view(shape)


def compress_delta(
    tuned: torch.nn.Module, base: torch.nn.Module, names: list[str], low_bits: str = ""
) -> dict[str, torch.Tensor]:
    """The fine-tuning delta ``tuned - base`` of the named parameters: matrices as integer rows with per-row
    scales (``<name>.q8`` / ``<name>.q4`` + ``<name>.scale``; 4 bits for names matching the anchored regex
    ``low_bits``), vectors and scalars in fp32 (``<name>.delta``). The delta of a few-shot fine-tuning is small
    beside the weights, so a quantisation step is too."""
    tuned_p, base_p = dict(tuned.named_parameters()), dict(base.named_parameters())
    low = re.compile(low_bits) if low_bits else None
    out = {}
    for name in names:
        delta = (tuned_p[name].detach() - base_p[name].detach()).float()
        if delta.dim() < 2:
            out[f"{name}.delta"] = delta
            continue
        bits = 4 if low and low.fullmatch(name) else 8
        out[f"{name}.q{bits}"], out[f"{name}.scale"] = quantize_rows(delta, bits)
    return out


def expand_delta(state: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Parameter name -> fp32 delta of a :func:`compress_delta` state (``shapes``: the parameters' shapes)."""
    out = {}
    for key, value in state.items():
        name, _, kind = key.rpartition(".")
        if kind in ("q8", "q4"):
            out[name] = dequantize_rows(value, state[f"{name}.scale"], shapes[name])
        elif kind == "delta":
            out[name] = value.float()
    return out


def require_encoders(task, name: str, train: bool = False) -> None:
    """Check that a task (or evaluation target) carries what an encoder-level method needs."""
    if task.backbone is None:
        raise ValueError(f"{name} runs the encoders: the task must carry the backbone (uses_backbone)")
    if train and task.train_images is None:
        raise ValueError(f"{name} trains on images: FitTask.train_images is missing")


class ImageFineTuning(Method):
    """Base of the methods that fine-tune encoder parameters on few-shot images (ClipFit, CLIP-CITE).

    ``state`` holds the trained tensors; ``model`` is the model predictions run through: ``fit`` may leave its
    trained copy there, otherwise :meth:`tuned_model` rebuilds it once from ``state`` and the target's backbone.
    Device and precision come from ``FitTask.runtime`` / ``EvalTarget.runtime``, never from the method config.
    """

    requires = Inputs.IMAGES
    selection = "none (last epoch)"

    @classmethod
    def training_work(cls, config: MethodConfig, cell: CellShape, arch: Arch) -> EncoderWork:
        """Every augmented training image goes through the image encoder, forward and backward, each epoch."""
        n = steps(cell.images, config.batch_size, config.epochs)
        return EncoderWork(images=n * config.batch_size, step_images=config.batch_size)

    @classmethod
    def eval_work(cls, config: MethodConfig, target: TargetShape, arch: Arch) -> EncoderWork:
        """The cell's own encoders score every test image and encode the target's prompts."""
        return EncoderWork(frozen_images=target.images, frozen_prompts=target.classes)

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.state: dict[str, torch.Tensor] = {}
        self.model: torch.nn.Module | None = None

    def start_fit(self, task: FitTask) -> tuple[MethodConfig, torch.device]:
        """Check the task, seed torch; return the config resolved for the task's dataset and the device to train on."""
        require_encoders(task, self.name, train=True)
        torch.manual_seed(task.seed)
        return self.task_config(task), task.runtime.torch_device()

    @abc.abstractmethod
    def tuned_parameters(self, target: EvalTarget) -> dict[str, torch.Tensor]:
        """Parameter values (by backbone name) that replace the backbone's to give the prediction model."""

    def tuned_model(self, target: EvalTarget) -> torch.nn.Module:
        """The prediction model; after ``load_state_dict`` it is rebuilt once from the target's backbone."""
        if self.model is None:
            require_encoders(target, self.name)
            if not self.state:
                raise RuntimeError(f"{self.name}: call fit() or load_state_dict() before predicting")
            tuned = apply_state(target.backbone.model, self.tuned_parameters(target))
            self.model = tuned.to(target.runtime.torch_device())
        return self.model

    def scoring(self, target: EvalTarget) -> tuple[torch.nn.Module, MixedPrecision]:
        """The prediction model and the target runtime's precision on its device."""
        model = self.tuned_model(target)
        return model, MixedPrecision(target.runtime.precision, device_of(model))

    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        return self.predictor(target)(x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.state = {k: v.clone() for k, v in state.items()}
        self.model = None
