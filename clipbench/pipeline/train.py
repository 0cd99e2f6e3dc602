"""Stage ``train``: fit one method on every training cell whose source is one dataset.

A cell is trained once per distinct config its protocols resolve to (:func:`clipbench.protocols.training_units`):
without protocol overrides, once.

Only the few-shot manifests, the ``fit`` feature cache, the text classifier and, for methods that use the
encoders, the backbone and the few-shot train/val image files are read here (under ``selection: full_val``,
methods that select get the dataset's own validation split instead: :mod:`clipbench.selection`); test features
and test images are not an input of this stage (the test-label firewall is structural).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from clipbench import recipes, selection
from clipbench import views as views_lib
from clipbench.backbones import Backbone, get_backbone, load_backbone, verify_checkpoint
from clipbench.cells import CellStore, TrainCell, TrainUnit, cell_dict, shared_store
from clipbench.data import LabelSpace, Record, metadata
from clipbench.data.imageset import ImageSet
from clipbench.data.index import DatasetIndex, load_index
from clipbench.data.kshot import KShotSplit, manifest_name, read_manifest, relabel, subset_labels
from clipbench.devices import host_state
from clipbench.executors import CellJob, run_cells
from clipbench.features import FeatureDir, check_source, load_text, read_feature_dir
from clipbench.io import atomic_save_tensors
from clipbench.layout import Layout
from clipbench.methods import METHODS, FeatureSet, FitTask, Inputs, Method, MethodConfig
from clipbench.methods.base import ViewNeed, fit_counted
from clipbench.pipeline.code import method_code
from clipbench.protocols import training_units
from clipbench.runtime import RuntimeConfig
from clipbench.typed import stable_hash, tensor_hash, to_plain

if TYPE_CHECKING:
    from clipbench.config import SuiteConfig

log = logging.getLogger(__name__)
STATE_FILE = "state.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"  # full fine-tuned weights, only with runtime.keep_checkpoints


@dataclass(frozen=True)
class TrainInputs:
    """The artifacts one train stage reads."""

    fit: FeatureDir
    text: torch.Tensor
    logit_scale: float
    space: LabelSpace
    requires: Inputs = Inputs.FEATURES
    backbone: Backbone | None = None  # only for methods that use the encoders
    image_dir: Path | None = None  # only for methods that train on images
    # the dataset's own validation split, for a method that selects under ``selection: full_val``; empty: each
    # manifest's few-shot validation set (also the fallback of a dataset without a validation split)
    selection_val: tuple[Record, ...] = ()
    template_set: str = ""  # the text recipe's set of ``text`` and ``space`` (:mod:`clipbench.recipes`)


def cell_labels(cell: TrainCell, split: KShotSplit) -> tuple[int, ...]:
    """Labels the cell trains on ("all": every label of the K-shot train list; "base": its first half)."""
    return subset_labels(split, cell.subset)


def _feature_set(
    fit: FeatureDir, split: str, records: tuple[Record, ...], views: tuple[str, int] | None = None, pre: bool = False
) -> FeatureSet:
    """Plain embeddings of ``records`` and, with ``views`` = (group name, count), their cached augmented views."""
    paths = [r.path for r in records]
    rows = fit.rows(split, paths)
    prefix = f"{split}_pre" if pre else split
    return FeatureSet(
        plain=fit.tensors[f"{prefix}_plain"][rows],
        labels=torch.tensor([r.label for r in records]),
        views=fit.views(*views, paths, pre) if views else None,
    )


def _image_set(image_dir: Path | None, records: tuple[Record, ...]) -> ImageSet | None:
    if image_dir is None:
        return None
    return ImageSet(image_dir, tuple(r.path for r in records), torch.tensor([r.label for r in records]))


def build_task(cell: TrainCell, split: KShotSplit, inputs: TrainInputs, need: ViewNeed | None = None) -> FitTask:
    """The :class:`FitTask` of one cell: relabelled few-shot train/val features (pre-projection ones for methods
    that need them), the ``need``'s cached views of the train images, the matching text rows and, for
    encoder-level methods, the backbone and image files."""
    labels = cell_labels(cell, split)
    train, val = relabel(split.train, labels), relabel(inputs.selection_val or split.val, labels)
    pre = inputs.requires is Inputs.PRE_PROJ_FEATURES
    views = (views_lib.group_name(need.recipe, cell.seed), need.count) if need else None
    return FitTask(
        space=inputs.space.subset(labels),
        train=_feature_set(inputs.fit, "train", train, views, pre),
        val=_feature_set(inputs.fit, "val", val, None, pre),
        text_weights=inputs.text[list(labels)],
        logit_scale=inputs.logit_scale,
        shots=cell.shots,
        seed=cell.seed,
        dataset=cell.dataset,
        subset=cell.subset,
        backbone=inputs.backbone,
        train_images=_image_set(inputs.image_dir, train),
        val_images=_image_set(inputs.image_dir, val),
    )


def load_inputs(
    backbone: str, dataset: str, cfg: SuiteConfig, layout: Layout, method: type[Method] | None = None
) -> TrainInputs:
    """The artifacts a train stage reads; the backbone (on ``runtime.device``) and image folder only if ``method``
    needs them."""
    inputs = feature_inputs(backbone, dataset, cfg, layout, method)
    if not (method and method.needs_backbone()):
        return inputs
    model = load_backbone(backbone, layout.backbone(backbone), cfg.runtime.torch_device(), cfg.runtime.precision)
    return replace(inputs, backbone=model)


def feature_inputs(
    backbone: str,
    dataset: str,
    cfg: SuiteConfig,
    layout: Layout,
    method: type[Method] | None = None,
    template_set: str | None = None,
) -> TrainInputs:
    """:func:`load_inputs` without the backbone (nothing is placed on a device); the text classifier and label
    space of ``template_set`` (a text recipe's set; ``None``: the suite's ``text.template_set``)."""
    index = load_index(layout.dataset_index(dataset))
    fit = read_feature_dir(layout.fit_features(backbone, dataset))  # rows are found by path (another dataset's fail)
    name = template_set or cfg.text.template_set
    text, scale, space = _text(backbone, index, cfg, layout, name)
    requires = method.requires if method else Inputs.FEATURES
    image_dir = Path(cfg.data_root) / index.image_root if requires is Inputs.IMAGES else None
    val = selection.full_val_records(cfg, index.splits.val)
    return TrainInputs(fit, text, scale, space, requires, None, image_dir, val, name)


def with_text(
    inputs: TrainInputs, backbone: str, dataset: str, cfg: SuiteConfig, layout: Layout, name: str
) -> TrainInputs:
    """``inputs`` with the text classifier and label space of template set ``name`` on ``dataset``."""
    index = load_index(layout.dataset_index(dataset))
    text, scale, space = _text(backbone, index, cfg, layout, name)
    return replace(inputs, text=text, logit_scale=scale, space=space, template_set=name)


def _text(
    backbone: str, index: DatasetIndex, cfg: SuiteConfig, layout: Layout, name: str
) -> tuple[torch.Tensor, float, LabelSpace]:
    """The text classifier (the suite's file or a recipe's extra one), logit scale and label space of set ``name``."""
    dataset = index.dataset
    path = layout.text_features(backbone, dataset, recipes.classifier_set(dataset, name, cfg.text.template_set))
    text, scale, text_meta = load_text(path)
    check_source(text_meta, "class_ids", list(index.splits.class_ids), path)
    return text, scale, index.label_space(metadata.templates(dataset, name))


@dataclass(frozen=True)
class TrainJob(CellJob):
    """One train stage's work: ``job.key(unit)`` in the stage process, ``job(unit, key)`` wherever the executor
    runs the unit (it trains the unit's cell under the unit's config and publishes it into the store).

    Picklable, for executors that run cells in other processes: inputs load lazily, once per process, and are
    not pickled; the backbone is loaded onto the process's device (``runtime.torch_device()``: a GPU worker's own
    GPU) only when a cell is computed, while keys use the checkpoint's verified sha256 (no model is built).
    """

    backbone: str
    method: str
    dataset: str
    cfg: SuiteConfig
    layout: Layout

    @property
    def method_cls(self) -> type[Method]:
        return METHODS.get(self.method)

    @property
    def store(self) -> CellStore:
        return CellStore(
            self.layout.models(self.backbone, self.method, self.dataset), shared_store(self.layout.root, "train")
        )

    def features(self, template_set: str | None = None) -> TrainInputs:
        """The stage's inputs without the backbone, with the text of ``template_set`` (``None``: the suite's)."""
        load = partial(feature_inputs, self.backbone, self.dataset, self.cfg, self.layout, self.method_cls)
        base = self._once("features", load)
        name = template_set or self.cfg.text.template_set
        if name == base.template_set:
            return base
        text = partial(with_text, base, self.backbone, self.dataset, self.cfg, self.layout, name)
        return self._once(("features", name), text)

    def template_set(self, unit: TrainUnit) -> str:
        """The set of the unit's text recipe on its source (its config, resolved for the source, decides)."""
        return recipes.template_set(unit.config, self.dataset, self.cfg.text.template_set)

    def inputs(self, template_set: str | None = None) -> TrainInputs:
        """The stage's inputs with, for methods that use the encoders, the backbone on this process's device."""
        inputs = self.features(template_set)
        if not self.method_cls.needs_backbone():
            return inputs
        device, runtime = self.cfg.runtime.torch_device(), self.cfg.runtime
        path = self.layout.backbone(self.backbone)
        model = self._once(("backbone", device), lambda: load_backbone(self.backbone, path, device, runtime.precision))
        return replace(inputs, backbone=model)

    def split(self, cell: TrainCell) -> KShotSplit:
        name = manifest_name(cell.shots, cell.seed)
        return self._once(("split", name), lambda: read_manifest(self.layout.splits(self.dataset) / name))

    def base_key(self, unit: TrainUnit) -> dict:
        """What every cell key of a variant shares (method, config, code, features, text, backbone checkpoint)."""
        return self._once(("base_key", unit.variant), lambda: self._base_key(unit.config, self.template_set(unit)))

    def _base_key(self, config: MethodConfig, template_set: str) -> dict:
        inputs, method_cls = self.features(template_set), self.method_cls
        spec = get_backbone(self.backbone)
        sha = verify_checkpoint(spec, self.layout.backbone(self.backbone)) if method_cls.needs_backbone() else None
        return {
            "method": self.method,
            "config": to_plain(config),
            "code": method_code("train", self.method),
            "features": inputs.fit.meta["feature_key"],
            "text": tensor_hash(inputs.text),
            "backbone": sha,
        }

    def selection_split(self, unit: TrainUnit) -> dict | None:
        """The unit's selection split (key and lineage); None under the default or when its config selects
        nothing (those keys are unchanged)."""
        selects = self.method_cls.selects(unit.config)
        if not selection.applies(self.cfg, selects):
            return None  # the inputs are not even read
        return selection.key_part(self.cfg, selects, self.features().selection_val)

    def key(self, unit: TrainUnit) -> str:
        """The unit's key; the variant is not part of it (its config is)."""
        chosen = {"selection": part} if (part := self.selection_split(unit)) else {}
        split = self.split(unit.cell).hash
        return stable_hash({**self.base_key(unit), **chosen, "split": split, "cell": cell_dict(unit.cell)})

    def __call__(self, unit: TrainUnit, key: str) -> None:
        inputs, chosen = self.inputs(self.template_set(unit)), self.selection_split(unit)
        if not self.method_cls.selects(unit.config):
            inputs = replace(inputs, selection_val=())  # it selects nothing: each manifest's own val set
        split, text = self.split(unit.cell), text_lineage(inputs)
        need = views_lib.unit_need(self.cfg, self.method, unit)
        _train_cell(self.method_cls, unit, split, inputs, self.store, key, self.cfg.runtime, chosen, text, need)


def run(*, backbone: str, method: str, dataset: str, cfg: SuiteConfig, layout: Layout) -> dict[str, int]:
    """Train every planned unit whose key changed; keep the others; drop cells no longer planned."""
    job = TrainJob(backbone, method, dataset, cfg, layout)
    METHODS.get(method)  # an unknown method fails before anything is read
    plan, label = training_units(cfg, method, dataset), f"train {method} {dataset}"
    summary = run_cells(plan, job.key, job, job.store, cfg.runtime.executor, label=label).summary()
    return {"planned": summary["planned"], "trained": summary["computed"]}


def _train_cell(
    method_cls,
    unit: TrainUnit,
    split: KShotSplit,
    inputs: TrainInputs,
    store: CellStore,
    key: str,
    runtime: RuntimeConfig,
    chosen: dict | None = None,
    text: dict | None = None,
    need: ViewNeed | None = None,
) -> None:
    cell, config = unit.cell, unit.config
    device = torch.device("cpu") if method_cls.host_fit else runtime.torch_device()
    task = replace(build_task(cell, split, inputs, need), runtime=runtime).to(device)
    model = method_cls(config)
    start = time.perf_counter()
    diagnostics = fit_counted(model, task)
    seconds = time.perf_counter() - start
    log.debug("trained %s %s in %.1fs %s", method_cls.name, unit.name, seconds, diagnostics)
    state = host_state(model.state_dict()) or {"_empty": torch.zeros(0)}
    reason = degenerate(diagnostics, state)
    if reason:
        log.warning("train %s %s FAILED: %s (stored as failed; no state is kept)", method_cls.name, unit.name, reason)

    def write(tmp: Path) -> dict:
        if not reason:
            atomic_save_tensors(tmp / STATE_FILE, state)
            if runtime.keep_checkpoints and hasattr(model, "checkpoint"):
                atomic_save_tensors(tmp / CHECKPOINT_FILE, model.checkpoint())
        return {
            "status": "failed" if reason else "ok",
            "reason": reason or "",
            "cell": cell_dict(cell),
            "split_hash": split.hash,
            "train_seconds": seconds,
            "diagnostics": diagnostics,
            "train_class_ids": list(task.space.class_ids),
            "config_hash": stable_hash({"method": method_cls.name, "config": config}),
            "runtime": runtime.lineage(),
            **({"text": text} if text else {}),  # the classifier of the unit's text recipe (text_lineage)
            **({"selection": chosen} if chosen else {}),  # absent under the default selection
            **({"variant": unit.variant} if unit.variant else {}),
        }

    store.put(unit.name, key, write)


def text_lineage(inputs: TrainInputs) -> dict:
    """The text classifier a cell read (its recipe's set, templates and content hash), for ``cell.json``."""
    return {
        "template_set": inputs.template_set,
        "templates": list(inputs.space.templates),
        "hash": tensor_hash(inputs.text),
    }


def degenerate(diagnostics: dict, state: dict[str, torch.Tensor]) -> str | None:
    """Why a fitted cell is not a result: a non-finite loss in its diagnostics or a non-finite state tensor."""
    for name, value in (diagnostics or {}).items():
        if "loss" in name and isinstance(value, (int, float, torch.Tensor)) and not math.isfinite(float(value)):
            return f"non-finite {name} ({float(value)})"
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"non-finite values in the trained state {name!r}"
    return None
