"""``clipbench plan``: what a suite will cost before anything runs, per method and in total.

Everything is computed from the suite and the registries: stages from the same expansion as ``dvc.yaml``
(:func:`clipbench.bench.dvc_overhead.stage_table`), cells from the protocol registry, dataset sizes from each
spec's published counts (or the toy definitions), the backbone architecture on PyTorch's ``meta`` device (forward
FLOPs counted by ``torch.utils.flop_counter``, activation bytes by the tensors autograd saves for backward,
parameter shapes), and each method's own cost statement (``training_work``, ``eval_work``, ``state_bytes``;
:mod:`clipbench.methods.work`) on its config resolved for each dataset.

Stated assumptions: a back-propagating pass costs 3 forwards; prompts run over the full context (trimming makes
prompt learners cheaper); activations are counted in fp32 (amp roughly halves them); the few-shot pools are the
union bound of the planned (shots, seed) samples; base and new halves split the test set in proportion to classes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from clipbench import recipes
from clipbench.backbones.registry import get_backbone, import_open_clip, quiet_random_init
from clipbench.bench.dvc_overhead import stage_table
from clipbench.bench.gpu_hours import GpuAssumption
from clipbench.cells import EvalCell, TrainCell
from clipbench.compute_plan import DatasetSize
from clipbench.config import SuiteConfig
from clipbench.data import DATASETS
from clipbench.data.metadata import templates
from clipbench.data.toy.suite import TOY_DATASETS
from clipbench.errors import ConfigError
from clipbench.methods import METHODS
from clipbench.methods.work import FP32, Arch, CellShape, EncoderWork, TargetShape
from clipbench.protocols import eval_units, split_needs, training_units
from clipbench.selection import needs_full_val
from clipbench.views import estimated_pairs, unit_need, view_groups

RESULT_CELL_BYTES = 1024  # an evaluation cell: its cell.json and one Parquet row (about 1 KB)
OPTIMISER_BYTES = 3 * FP32  # per trained encoder parameter: its gradient and AdamW's two moments


def dataset_size(name: str) -> DatasetSize:
    """Published split sizes of a registered dataset, or a toy dataset's generated sizes."""
    spec = DATASETS.get(name)
    if getattr(spec, "toy", None):
        toy = TOY_DATASETS[spec.toy]
        train, val, test = (toy.split_size(split) for split in ("train", "val", "test"))
        return DatasetSize(name, len(toy.classes), train, val, test)
    if getattr(spec, "expected", None) is None:
        raise ConfigError(f"plan: dataset {name!r} declares no sizes (a custom dataset); plan a suite without it")
    return DatasetSize.published(name)


def _saved_bytes(run) -> float:
    """Bytes of the non-parameter tensors autograd saves for backward while ``run()`` executes."""
    total = [0.0]

    def pack(t: torch.Tensor):
        if not isinstance(t, torch.nn.Parameter):
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total[0]


def _flops(run) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return float(counter.get_total_flops())


@functools.cache
def architecture(backbone: str) -> Arch:
    """The backbone's architecture measured on the ``meta`` device (no weights, no compute)."""
    spec = get_backbone(backbone)
    open_clip = import_open_clip()
    with quiet_random_init():  # shapes only: no weights are meant to be loaded
        model = open_clip.create_model(spec.model, force_quick_gelu=spec.force_quick_gelu, device="meta")
    size = model.visual.image_size
    side = size[0] if isinstance(size, (tuple, list)) else size
    tokenizer = open_clip.get_tokenizer(spec.model)

    def image(n: int):
        return lambda: model.encode_image(torch.zeros(n, 3, side, side, device="meta"))

    def text(n: int):
        return lambda: model.encode_text(tokenizer(["a photo of a cat."] * n).to("meta"))

    embed = model.text_projection.shape[-1]
    shapes = tuple((n, tuple(p.shape)) for n, p in model.named_parameters())
    return Arch(
        model=spec.model,
        image_size=side,
        embed_dim=embed,
        image_width=_pre_projection_width(model.visual, embed),
        text_width=model.token_embedding.weight.shape[1],
        image_flops=_flops(image(1)),
        text_flops=_flops(text(1)),
        image_activation_bytes=_saved_bytes(image(2)) - _saved_bytes(image(1)),
        text_activation_bytes=_saved_bytes(text(2)) - _saved_bytes(text(1)),
        shapes=shapes,
    )


def _pre_projection_width(visual: torch.nn.Module, embed: int) -> int:
    proj = getattr(visual, "proj", None)
    if isinstance(proj, torch.Tensor):
        return proj.shape[0]
    c_proj = getattr(getattr(visual, "attnpool", None), "c_proj", None)  # ResNet attention pool
    return c_proj.in_features if c_proj is not None else embed


@dataclass
class MethodRow:
    """One method's planned cost over the whole suite (every backbone)."""

    method: str
    train_cells: int = 0
    eval_cells: int = 0
    work: EncoderWork = field(default_factory=EncoderWork)
    flops: float = 0.0
    state_bytes: float = 0.0
    peak_bytes: float = 0.0
    result_bytes: float = 0.0


@dataclass
class SharedRow:
    """Feature extraction and text classifiers of one backbone, shared by every method."""

    backbone: str
    image_passes: float
    prompt_passes: float
    flops: float
    feature_bytes: float


@dataclass
class Plan:
    suite: str
    stages: dict[str, int]
    backbones: dict[str, Arch]
    shared: list[SharedRow]
    methods: list[MethodRow]
    gpu: GpuAssumption

    def hours(self, flops: float) -> float:
        return flops / (self.gpu.sustained * 1e12) / 3600

    def totals(self) -> dict[str, float]:
        rows = self.methods
        return {
            "train_cells": sum(r.train_cells for r in rows),
            "eval_cells": sum(r.eval_cells for r in rows),
            "image_passes": sum(r.work.image_passes for r in rows) + sum(s.image_passes for s in self.shared),
            "prompt_passes": sum(r.work.prompt_passes for r in rows) + sum(s.prompt_passes for s in self.shared),
            "flops": sum(r.flops for r in rows) + sum(s.flops for s in self.shared),
            "state_bytes": sum(r.state_bytes for r in rows),
            "result_bytes": sum(r.result_bytes for r in rows),
            "feature_bytes": sum(s.feature_bytes for s in self.shared),
            "peak_bytes": max([r.peak_bytes for r in rows], default=0.0),
        }


def _subset_classes(classes: int, subset: str) -> int:
    base = math.ceil(classes / 2)
    return {"base": base, "new": classes - base}.get(subset, classes)


def cell_shape(cell: TrainCell, views: int = 0) -> CellShape:
    """The cost shape of ``cell`` whose method reads ``views`` augmented views per image."""
    size = dataset_size(cell.dataset)
    classes = _subset_classes(size.classes, cell.subset)
    return CellShape(cell.dataset, cell.shots, classes, min(size.train, cell.shots * classes), views)


def target_shape(cell: EvalCell) -> TargetShape:
    size = dataset_size(cell.dataset)
    classes = _subset_classes(size.classes, cell.subset)
    return TargetShape(round(size.test * classes / size.classes), classes)


def extraction_images(cfg: SuiteConfig) -> dict[str, int]:
    """Image-encoder inputs of one backbone's extraction, by kind: the few-shot train pools (test transform), the
    augmented views of the methods' view recipes (upper bound: :func:`clipbench.views.estimated_pairs`), the
    validation pools (the whole validation split under ``selection: full_val``) and the test sets."""
    counts = {"train": 0, "views": 0, "val": 0, "test": 0}
    for name in cfg.all_datasets():
        size = dataset_size(name)
        counts["test"] += size.test
        if name not in cfg.datasets:
            continue
        needs = split_needs(cfg, name)
        counts["train"] += min(size.train, size.classes * sum(k for k, _ in needs))
        val = min(size.val or size.test, size.classes * sum(min(k, 4) for k, _ in needs))
        counts["val"] += size.val if size.val and needs_full_val(cfg, name) else val  # full_val: the whole split
        counts["views"] += sum(estimated_pairs(g, size.classes, size.train) for g in view_groups(cfg, name))
    return counts


def shared_row(cfg: SuiteConfig, backbone: str, arch: Arch) -> SharedRow:
    """Extraction (:func:`extraction_images`) and the prompts of every text classifier (the suite's template set
    and the extra sets of the methods' text recipes)."""
    images = float(sum(extraction_images(cfg).values()))
    prompts = 0.0
    for name in cfg.all_datasets():
        sets = (cfg.text.template_set, *recipes.extra_sets(cfg, name))  # the suite's and the recipes' classifiers
        prompts += dataset_size(name).classes * sum(len(templates(name, s)) for s in sets)
    return SharedRow(
        backbone,
        images,
        prompts,
        images * arch.image_flops + prompts * arch.text_flops,
        images * FP32 * (arch.embed_dim + arch.image_width),
    )


def peak_bytes(arch: Arch, work: EncoderWork, feature_bytes: float) -> float:
    """See :data:`PEAK_FORMULA`."""
    activations = work.step_images * arch.image_activation_bytes + work.step_prompts * arch.text_activation_bytes
    return FP32 * arch.params + OPTIMISER_BYTES * work.trained_params + activations + feature_bytes


PEAK_FORMULA = (
    "peak = 4 B x backbone parameters (fp32 weights) + 12 B x trained encoder parameters (gradient, AdamW moments) "
    "+ per step: images x image-tower activations + prompts x text-tower activations (tensors saved for backward, "
    "fp32, measured on the meta device) + the largest cell's cached features (4 B x images x (1 + views) x D)"
)


def method_row(cfg: SuiteConfig, method: str, arches: dict[str, Arch]) -> MethodRow:
    cls, row = METHODS.get(method), MethodRow(method)
    units = eval_units(cfg, method)  # evaluation cell -> the trained unit it scores
    trained = [u for d in cfg.datasets for u in training_units(cfg, method, d)]  # one per distinct resolved config
    for arch in arches.values():
        for unit in trained:
            need = unit_need(cfg, method, unit)
            shape = cell_shape(unit.cell, need.count if need else 0)
            work = cls.training_work(unit.config, shape, arch)
            features = FP32 * shape.images * (1 + shape.views) * arch.embed_dim
            row.train_cells += 1
            row.work += work
            row.flops += work.flops(arch)
            row.state_bytes += cls.state_bytes(unit.config, shape, arch)
            row.peak_bytes = max(row.peak_bytes, peak_bytes(arch, work, features))
        for cell, unit in units.items():
            work = cls.eval_work(unit.config, target_shape(cell), arch)
            row.eval_cells += 1
            row.work += work
            row.flops += work.flops(arch)
        row.result_bytes += RESULT_CELL_BYTES * len(units)
    return row


def suite_plan(cfg: SuiteConfig, gpu: GpuAssumption | None = None) -> Plan:
    """The plan of ``cfg`` (validated by :func:`clipbench.config.load_suite`)."""
    for name in cfg.all_datasets():
        dataset_size(name)  # fails first, in one line, on a dataset without sizes
    arches = {b: architecture(b) for b in cfg.backbones}
    params = {"backbones": cfg.backbones, "datasets": cfg.datasets, "targets": cfg.targets, "methods": cfg.methods}
    return Plan(
        cfg.suite,
        stage_table(params),
        arches,
        [shared_row(cfg, b, a) for b, a in arches.items()],
        [method_row(cfg, m, arches) for m in cfg.methods],
        gpu or GpuAssumption(),
    )


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _gb(x: float) -> str:
    return f"{x / 1e9:,.2f}"


def _h(x: float) -> str:
    return f"{x:,.2f}"


def render(plan: Plan) -> str:
    """The plan as Markdown: stages, then one row per method with totals, then the assumptions."""
    t = plan.totals()
    lines = [f"# Plan of suite `{plan.suite}`", "", "## Stages (`dvc.yaml` expansion)", ""]
    lines += ["| stage | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in plan.stages.items()] + [f"| **total** | **{sum(plan.stages.values())}** |"]
    lines += ["", "## Backbones", ""]
    for name, a in plan.backbones.items():
        lines.append(
            f"* `{name}` ({a.model}, {a.image_size} px): {a.params / 1e6:,.1f} M parameters, "
            f"{a.image_flops / 1e9:,.2f} GFLOPs per image, {a.text_flops / 1e9:,.2f} GFLOPs per prompt, "
            f"{a.image_activation_bytes / 1e6:,.1f} MB / {a.text_activation_bytes / 1e6:,.1f} MB of activations "
            "per image / prompt for backward"
        )
    lines += ["", f"## Cost per method (GPU-hours on {plan.gpu.name} at {plan.gpu.utilisation:.0%} utilisation)", ""]
    lines += [
        "| method | train cells | eval cells | image passes | prompt passes | PFLOPs | GPU-hours | peak GPU GB "
        "| cell states GB | results GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in plan.shared:
        lines.append(
            f"| *extraction, {s.backbone}* (shared) | | | {_n(s.image_passes)} | {_n(s.prompt_passes)} "
            f"| {s.flops / 1e15:,.1f} | {_h(plan.hours(s.flops))} | | features: {_gb(s.feature_bytes)} | |"
        )
    for r in plan.methods:
        lines.append(
            f"| {r.method} | {r.train_cells} | {r.eval_cells} | {_n(r.work.image_passes)} | "
            f"{_n(r.work.prompt_passes)} | {r.flops / 1e15:,.1f} | {_h(plan.hours(r.flops))} | {_gb(r.peak_bytes)} | "
            f"{_gb(r.state_bytes)} | {_gb(r.result_bytes)} |"
        )
    lines.append(
        f"| **total** | **{t['train_cells']}** | **{t['eval_cells']}** | **{_n(t['image_passes'])}** | "
        f"**{_n(t['prompt_passes'])}** | **{t['flops'] / 1e15:,.1f}** | **{_h(plan.hours(t['flops']))}** | "
        f"**{_gb(t['peak_bytes'])}** (max) | **{_gb(t['state_bytes'])}** | **{_gb(t['result_bytes'])}** |"
    )
    disk = t["feature_bytes"] + t["state_bytes"] + t["result_bytes"]
    lines += [
        "",
        f"Disk: features {_gb(t['feature_bytes'])} GB + cell states {_gb(t['state_bytes'])} GB + results "
        f"{_gb(t['result_bytes'])} GB = **{_gb(disk)} GB** (backbone checkpoints and datasets not included).",
        "",
        f"Peak GPU memory: {PEAK_FORMULA}.",
        "",
        "Assumptions: see `clipbench/plan.py` (a back-propagating pass costs 3 forwards; prompts over the full "
        "context; fp32 activations; few-shot pools bounded by the planned samples; CPU decoding overlaps GPU work).",
    ]
    return "\n".join(lines) + "\n"
