"""Stage ``evaluate``: score every trained cell of one method on the test splits its protocols name.

This is the only stage that reads test labels. Each evaluation is a cell of its own, keyed by the trained
cell's key and the test/text feature keys, so re-running after adding a seed scores only the new cells. It scores
the model its protocol's config trained (:func:`clipbench.protocols.eval_units`: the shared one unless a protocol
override gives the protocol a config of its own).
Methods with no answer for a target (class-specific weights on unseen classes) yield status ``n/a``.
What a method scores depends on what it consumes: cached projected or pre-projection test features, or (for
methods that fine-tune the encoders) the test images, streamed in batches through its ``predictor``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from clipbench import recipes
from clipbench.backbones import load_backbone
from clipbench.cells import CellStore, EvalCell, TrainUnit, shared_store
from clipbench.data import LabelSpace, metadata
from clipbench.data.images import open_rgb
from clipbench.data.index import DatasetIndex, load_index
from clipbench.data.kshot import base_new_labels, manifest_name, read_manifest
from clipbench.data.loader import load_batches
from clipbench.devices import to_device, to_host
from clipbench.errors import DataError, NotApplicable
from clipbench.executors import CellJob, run_cells
from clipbench.features import check_source, load_text, read_feature_dir
from clipbench.io import load_tensors
from clipbench.layout import Layout
from clipbench.methods import METHODS, EvalTarget, Inputs, Method
from clipbench.pipeline.code import method_code
from clipbench.pipeline.train import STATE_FILE, cell_labels
from clipbench.protocols import eval_cells, eval_units
from clipbench.results import RESULT_FILE, write_results
from clipbench.typed import stable_hash

if TYPE_CHECKING:
    from clipbench.config import SuiteConfig


class _Inputs:
    """Lazily loaded, memoised test features, text classifiers and label spaces of one evaluation run (one per
    process: see :class:`EvaluateJob`)."""

    def __init__(self, backbone: str, cfg: SuiteConfig, layout: Layout, method: type[Method]) -> None:
        self.backbone, self.cfg, self.layout, self.method = backbone, cfg, layout, method
        self.text = cache(lambda d, name: checked(load_text(self.text_path(d, name)), d, self.text_path(d, name)))
        self.index = cache(lambda d: load_index(layout.dataset_index(d)))

        def checked(features, dataset: str, path: Path | None = None):
            meta = features.meta if path is None else features[2]
            check_source(meta, "index_hash", self.index(dataset).hash, path or layout.test_features(backbone, dataset))
            return features

        self.test = cache(lambda d: checked(read_feature_dir(layout.test_features(backbone, d)), d))
        # the set of the method's text recipe on a dataset under a protocol (:mod:`clipbench.recipes`)
        self.recipe = cache(lambda protocol, d: recipes.method_set(cfg, method.name, protocol, d))

        self.space = cache(self._space)
        self.manifest = cache(lambda d, shots, seed: read_manifest(layout.splits(d) / manifest_name(shots, seed)))
        precision = cfg.runtime.precision
        self.train_records: dict = {}  # TrainUnit -> its cell.json, read once per run
        self.models = cache(lambda device: load_backbone(backbone, layout.backbone(backbone), device, precision))
        self.units = cache(lambda: eval_units(cfg, method.name))  # EvalCell -> the TrainUnit it scores

    @property
    def device(self) -> torch.device:
        """This process's device, resolved when a cell is computed (keys never need it)."""
        return self.cfg.runtime.torch_device()

    def model(self):
        """The backbone on this process's device (loaded once per device)."""
        return self.models(self.device)

    def _space(self, dataset: str, name: str) -> LabelSpace:
        return self.index(dataset).label_space(metadata.templates(dataset, name))

    def text_path(self, dataset: str, name: str) -> Path:
        """The text classifier of template set ``name`` on ``dataset`` (the suite's file or an extra one)."""
        extra = recipes.classifier_set(dataset, name, self.cfg.text.template_set)
        return self.layout.text_features(self.backbone, dataset, extra)

    def cell_text(self, cell: EvalCell) -> tuple[torch.Tensor, float, dict]:
        """The classifier of the evaluated dataset under the method's recipe for the cell's protocol."""
        return self.text(cell.dataset, self.recipe(cell.protocol, cell.dataset))

    def backbone_model(self):
        return self.model() if self.method.needs_backbone() else None


def _test_inputs(cell: EvalCell, inputs: _Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """What the method scores (features, pre-projection features or row numbers of test images) and labels."""
    test = inputs.test(cell.dataset)
    labels = test.tensors["labels"]
    if inputs.method.requires is Inputs.IMAGES:
        return torch.arange(len(labels)), labels
    key = "pre_features" if inputs.method.requires is Inputs.PRE_PROJ_FEATURES else "features"
    return test.tensors[key], labels


@dataclass(frozen=True)
class _TestPixels:
    """Eval-transform pixels of one batch of test images (``make`` of a loader; decoded per batch, not kept)."""

    image_dir: Path
    chunks: tuple[tuple[str, ...], ...]
    preprocess: object

    def __call__(self, i: int) -> torch.Tensor:
        return torch.stack([self.preprocess(open_rgb(self.image_dir / p)) for p in self.chunks[i]])


def _image_batches(index: DatasetIndex, rows: torch.Tensor, inputs: _Inputs):
    """Test-transform pixel batches of the test images at ``rows``, prepared by ``runtime.decode_workers``."""
    model, image_dir, size = (
        inputs.model(),
        Path(inputs.cfg.data_root) / index.image_root,
        inputs.cfg.features.batch_size,
    )
    paths = [index.splits.test[int(i)].path for i in rows]
    chunks = tuple(tuple(paths[s : s + size]) for s in range(0, len(paths), size))
    gpu = inputs.device.type == "cuda"
    make = _TestPixels(image_dir, chunks, model.preprocess)
    return load_batches(make, len(chunks), inputs.cfg.runtime.decode_workers, pin=gpu, overlap=gpu)


def _predict(model: Method, target: EvalTarget, x: torch.Tensor, cell: EvalCell, inputs: _Inputs) -> torch.Tensor:
    """Logits on the host; features go to the device whole, test images batch by batch."""
    score = model.predictor(target)
    if inputs.method.requires is not Inputs.IMAGES:
        return to_host(score(x.to(inputs.device)))
    with torch.inference_mode():
        parts = [to_host(score(batch)) for batch in _image_batches(inputs.index(cell.dataset), x, inputs)]
    return torch.cat(parts) if parts else torch.zeros(0, len(target.space))


def _labels_for(cell: EvalCell, inputs: _Inputs) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    """(target labels or None for all, training labels) of an evaluation cell."""
    split = inputs.manifest(cell.train.dataset, cell.train.shots, cell.train.seed)
    train_labels = cell_labels(cell.train, split)
    if cell.subset == "all":
        return None, train_labels
    base, new = base_new_labels({r.label for r in split.train})
    return (base if cell.subset == "base" else new), train_labels


def _score(method_cls, config, state: dict, cell: EvalCell, inputs: _Inputs) -> dict:
    target_labels, train_labels = _labels_for(cell, inputs)
    feats, labels = _test_inputs(cell, inputs)
    text, scale, _ = inputs.cell_text(cell)
    space = inputs.space(cell.dataset, inputs.recipe(cell.protocol, cell.dataset))
    source = cell.train.dataset  # the training space as the unit was trained: its config's recipe on the source
    train_space = inputs.space(source, recipes.template_set(config, source, inputs.cfg.text.template_set))
    if target_labels is not None:
        keep = torch.isin(labels, torch.tensor(target_labels))
        remap = {old: new for new, old in enumerate(target_labels)}
        feats, labels = feats[keep], torch.tensor([remap[int(v)] for v in labels[keep]])
        space, text = space.subset(target_labels), text[list(target_labels)]
    target = EvalTarget(
        space,
        text,
        scale,
        train_space.subset(train_labels),
        backbone=inputs.backbone_model(),
        runtime=inputs.cfg.runtime,
    ).to(inputs.device)
    model = method_cls(config)
    model.load_state_dict(to_device(state, inputs.device))
    try:
        logits = _predict(model, target, feats, cell, inputs)
    except NotApplicable as exc:
        return {"status": "n/a", "value": math.nan, "n": len(labels), "note": str(exc)}
    if not torch.isfinite(logits).all():
        return {"status": "failed", "value": math.nan, "n": len(labels), "note": "non-finite logits"}
    correct = (logits.argmax(dim=1) == labels).sum().item()
    return {"status": "ok", "value": 100.0 * correct / len(labels), "n": len(labels), "note": ""}


@dataclass(frozen=True)
class EvaluateJob(CellJob):
    """One evaluate stage's work: ``job.key(cell)`` in the stage process, ``job(cell, key)`` wherever the
    executor runs the cell (it scores the cell and publishes it into the store).

    Picklable, for executors that run cells in other processes: its inputs (:class:`_Inputs`) are built lazily,
    once per process, and not pickled; the device is resolved and the backbone loaded only when a cell is scored.
    """

    backbone: str
    method: str
    cfg: SuiteConfig
    layout: Layout

    @property
    def inputs(self) -> _Inputs:
        return self._once("inputs", lambda: _Inputs(self.backbone, self.cfg, self.layout, METHODS.get(self.method)))

    @property
    def code(self) -> str:
        return self._once("code", lambda: method_code("evaluate", self.method))

    @property
    def store(self) -> CellStore:
        return CellStore(
            self.layout.results(self.backbone, self.method) / "cells", shared_store(self.layout.root, "evaluate")
        )

    def key(self, cell: EvalCell) -> str:
        inputs = self.inputs
        return stable_hash(
            {
                "train": _train_record(inputs.units()[cell], inputs)["key"],
                "test": inputs.test(cell.dataset).meta,
                "code": self.code,
                "text": inputs.cell_text(cell)[2],
                "cell": cell.as_row(),
            }
        )

    def __call__(self, cell: EvalCell, key: str) -> None:
        inputs = self.inputs
        _evaluate_cell(inputs.method, inputs.units()[cell], cell, inputs, self.store, key)


def run(*, backbone: str, method: str, cfg: SuiteConfig, layout: Layout) -> Path:
    """Evaluate every planned cell (reusing unchanged ones) and write the method's result table."""
    METHODS.get(method)  # an unknown method fails before anything is read
    job, plan = EvaluateJob(backbone, method, cfg, layout), eval_cells(cfg)
    run_cells(plan, job.key, job, job.store, cfg.runtime.executor, label=f"evaluate {method}")
    hashes = {p: cfg.method_config_hash(method, p) for p in cfg.protocols}  # its config under each protocol
    frame = pd.DataFrame([job.store.read(c.name)["row"] for c in plan]).assign(
        method=method, backbone=backbone, config_hash=[hashes[c.protocol] for c in plan]
    )
    return write_results(frame, layout.results(backbone, method) / RESULT_FILE)


def _train_dir(unit: TrainUnit, inputs: _Inputs) -> Path:
    return inputs.layout.models(inputs.backbone, inputs.method.name, unit.cell.dataset) / unit.name


def _train_record(unit: TrainUnit, inputs: _Inputs) -> dict:
    """The trained unit's ``cell.json`` (checked and read once per run: several evaluations share it)."""
    if unit not in inputs.train_records:
        inputs.train_records[unit] = _read_train_record(unit, inputs)
    return inputs.train_records[unit]


def _read_train_record(unit: TrainUnit, inputs: _Inputs) -> dict:
    """The trained unit's ``cell.json``; a damaged or missing one names the stage to re-run."""
    train_dir = _train_dir(unit, inputs)
    store, stage = CellStore(train_dir.parent), f"train@{inputs.backbone}-{inputs.method.name}-{unit.cell.dataset}"
    problem = store.damage(unit.name) if train_dir.is_dir() else None
    if problem:
        raise DataError(
            f"trained cell {train_dir} is not as written: {problem}; run `dvc repro {stage}` (the cell is recomputed)"
        )
    record = store.read(unit.name)
    if record is None:
        raise DataError(f"trained cell {train_dir} is missing; run `dvc repro {stage}`")
    return record


def _evaluate_cell(method_cls, unit: TrainUnit, cell: EvalCell, inputs: _Inputs, store: CellStore, key: str) -> None:
    train_dir, config = _train_dir(unit, inputs), unit.config
    train_record = _train_record(unit, inputs)
    test_meta = inputs.test(cell.dataset).meta
    start = time.perf_counter()
    if train_record.get("status") == "failed":
        note = f"training failed: {train_record['reason']}"
        score = {"status": "failed", "value": math.nan, "n": 0, "note": note}
    else:
        score = _score(method_cls, config, load_tensors(train_dir / STATE_FILE), cell, inputs)
    row = {
        **cell.as_row(),
        **score,
        "split_hash": train_record["split_hash"],
        "feature_key": test_meta["feature_key"],
        "train_key": train_record["key"],
        "eval_key": key,
        "train_seconds": train_record["train_seconds"],
        "eval_seconds": time.perf_counter() - start,
        "diagnostics": json.dumps(train_record["diagnostics"], sort_keys=True),
    }
    store.put(cell.name, key, lambda tmp: {"row": row, "runtime": inputs.cfg.runtime.lineage()})
