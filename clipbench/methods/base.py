"""The method interface every few-shot adaptation method implements.

A method declares which inputs it needs (``requires``) and whether it needs the backbone itself
(``uses_backbone``), carries a frozen config dataclass (``Config``), learns from a :class:`FitTask` and predicts
logits for an :class:`EvalTarget`. It never sees test data during ``fit``: the pipeline builds a task from the
few-shot train/val manifests only.

What ``predict(x, target)`` receives as ``x`` depends on ``requires``:

* ``FEATURES``: projected, unnormalised test-transform embeddings ``[N, D]``;
* ``PRE_PROJ_FEATURES``: embeddings before the visual projection ``[N, W]`` (ViT pooled token after
  ``ln_post``; ResNet attention-pool output before ``c_proj``);
* ``IMAGES``: a batch of test-transform pixels ``[B, 3, H, W]`` (the pipeline streams the test set in batches).

Device: the pipeline hands ``fit`` a task, and ``predict`` inputs, a target and a loaded state, whose tensors
are all on ``runtime.device``; a method creates its tensors and modules on the device of its inputs and reads
numbers back only through :mod:`clipbench.devices`. The pipeline copies ``state_dict()`` and logits to the host.

Methods with ``uses_backbone`` get the loaded, frozen :class:`~clipbench.backbones.Backbone` in
``FitTask.backbone`` and ``EvalTarget.backbone``; they must copy any module they change, never modify it.
"""

from __future__ import annotations

import abc
import enum
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from clipbench.data import DATASETS
from clipbench.data.base import LabelSpace
from clipbench.data.images import ViewRecipe
from clipbench.data.imageset import ImageSet
from clipbench.errors import ConfigError, NotApplicable
from clipbench.methods.work import Arch, CellShape, EncoderWork, TargetShape
from clipbench.runtime import DEFAULT_RUNTIME, RuntimeConfig
from clipbench.typed import parse, to_plain

if TYPE_CHECKING:
    from clipbench.backbones import Backbone


class Inputs(enum.Enum):
    """What a method consumes; the pipeline decides which cached artifacts feed it."""

    FEATURES = "features"  # projected image embeddings (raw, not normalised), plain and augmented views
    PRE_PROJ_FEATURES = "pre_proj"  # embeddings before the visual projection, plain and augmented views
    IMAGES = "images"  # pixels through the (trainable) encoders; implies ``uses_backbone``


@dataclass(frozen=True)
class ViewNeed:
    """The augmented views one cell reads: ``count`` distinct views per training image drawn by ``recipe``
    (epoch or step ``t`` reads view ``t mod count``), and whether pre-projection embeddings of them too (``pre``)."""

    recipe: ViewRecipe
    count: int
    pre: bool = False

    def capped(self, max_views: int | None) -> ViewNeed:
        """This need under the suite's ``features.max_views`` (``None``: no cap)."""
        return self if max_views is None or self.count <= max_views else replace(self, count=max_views)


@dataclass(frozen=True)
class FeatureSet:
    """Cached embeddings of a labelled image list.

    ``plain`` holds test-transform embeddings ``[N, D]``; ``views`` holds augmented views ``[V, N, D]``
    (``None`` for validation sets); ``labels`` are indices into the task's label space.
    """

    plain: torch.Tensor
    labels: torch.Tensor
    views: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> FeatureSet:
        views = self.views.to(device) if self.views is not None else None
        return FeatureSet(self.plain.to(device), self.labels.to(device), views)

    def view_stack(self) -> torch.Tensor:
        """Augmented views ``[V, N, D]``, or the plain embeddings as a single view when none were cached."""
        return self.views if self.views is not None else self.plain[None]


@dataclass(frozen=True)
class FitTask:
    """Everything a method may learn from: few-shot train and val sets, never test.

    ``train``/``val`` hold projected features, or pre-projection features for ``PRE_PROJ_FEATURES`` methods.
    ``val`` is the few-shot validation set, or for a method that ``selects`` under ``selection: full_val`` the
    source dataset's whole validation split (:mod:`clipbench.selection`).
    ``train_images``/``val_images`` (``IMAGES`` methods) are the same images as decodable files;
    ``backbone`` is set for methods with ``uses_backbone``.
    """

    space: LabelSpace
    train: FeatureSet
    val: FeatureSet
    text_weights: torch.Tensor  # [C, D] normalised zero-shot classifier of ``space``
    logit_scale: float
    shots: int
    seed: int
    dataset: str = ""  # registry key of the source dataset (for per-dataset reference settings)
    subset: str = "all"  # "all" classes of the split, or its "base" half (base-to-new training)
    backbone: Backbone | None = None
    train_images: ImageSet | None = None
    val_images: ImageSet | None = None
    runtime: RuntimeConfig = DEFAULT_RUNTIME  # device and precision (never part of a cell key)

    def to(self, device: torch.device) -> FitTask:
        """The task with its features, labels and text weights on ``device`` (images are decoded on the host and
        moved batch by batch by the method)."""
        moved = {"train": self.train.to(device), "val": self.val.to(device)}
        return replace(self, **moved, text_weights=self.text_weights.to(device))


@dataclass(frozen=True)
class EvalTarget:
    """The label space to predict in, with its zero-shot classifier and the space the method was trained on."""

    space: LabelSpace
    text_weights: torch.Tensor
    logit_scale: float
    train_space: LabelSpace
    backbone: Backbone | None = None  # set for methods with ``uses_backbone``
    runtime: RuntimeConfig = DEFAULT_RUNTIME  # device and precision (never part of a cell key)

    def to(self, device: torch.device) -> EvalTarget:
        return replace(self, text_weights=self.text_weights.to(device))


def text_recipe(default: str | None = None) -> Any:
    """The ``templates`` field of a method config: the template set (``templates.json``) of the method's text
    classifier and prompts on every dataset it touches; ``None``: the suite's ``text.template_set``. A dataset
    that does not define the set uses the suite's set (:mod:`clipbench.recipes`). Part of the config like any
    field (so of its keys and its MLflow params); the classifier it selects enters every key as well."""
    return field(default=default)


@dataclass(frozen=True)
class MethodConfig:
    """Base of method configs; subclasses add typed fields with documented defaults."""

    templates: str | None = text_recipe()  # the text recipe (:func:`text_recipe`); methods override the default


def check_crop_scale(scale: tuple[float, float], where: str) -> None:
    """A RandomResizedCrop scale range: 0 < low <= high <= 1 (error naming ``where``.crop_scale otherwise)."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"{where}.crop_scale: need 0 < low <= high <= 1, got {list(scale)}")


def resolve_config(config: MethodConfig, dataset: str, where: str = "method_params") -> MethodConfig:
    """The config a cell whose source is ``dataset`` runs with.

    A config with a ``by_dataset: dict[str, dict[str, Any]]`` field holds per-dataset overrides of its own fields
    (the reference's dataset-specific settings); the resolved config applies ``by_dataset[dataset]`` and drops the
    table, so a cell's key depends only on its own dataset's entry. Configs without the field are returned as is.
    """
    table = getattr(config, "by_dataset", None)
    if table is None:
        return config
    overrides = to_plain(table.get(dataset, {}))
    if "by_dataset" in overrides:
        raise ConfigError(f"{where}.by_dataset.{dataset}: by_dataset cannot be nested")
    return parse(type(config), {**to_plain(config), "by_dataset": {}, **overrides}, f"{where}.by_dataset.{dataset}")


def check_by_dataset(config: MethodConfig, where: str) -> None:
    """Parse every ``by_dataset`` entry now, so a wrong dataset, key or value fails at validation, not mid-suite."""
    for dataset in getattr(config, "by_dataset", None) or {}:
        if dataset not in DATASETS:
            raise ConfigError(f"{where}.by_dataset: {DATASETS.unknown_message(dataset)}")
        resolve_config(config, dataset, where)


def frozen_by_dataset(table: dict[str, dict[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    """A read-only ``by_dataset`` default (what ``parse`` makes of the same table in ``params.yaml``)."""
    return MappingProxyType({dataset: MappingProxyType(dict(entry)) for dataset, entry in table.items()})


class Method(abc.ABC):
    """One few-shot adaptation method (see the module docstring)."""

    name: ClassVar[str]
    requires: ClassVar[Inputs] = Inputs.FEATURES
    uses_backbone: ClassVar[bool] = False  # needs the encoders themselves (prompt learning, fine-tuning)
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    class_specific: ClassVar[bool] = False  # learned weights are tied to the training classes
    host_fit: ClassVar[bool] = False  # ``fit`` runs on the CPU (a scikit-learn solver); ``predict`` on the device
    selection: ClassVar[str] = "none"  # what, if anything, is selected on the few-shot validation set
    # Overrides of ``Config`` fields for a tiny run (seconds on a CPU, e.g. 2 epochs): the contract tests, the
    # firewall test and the reduced suites of tests and ``clipbench bench`` apply them, never the pipeline. A new
    # method sets them next to its ``Config`` and is picked up by every such caller.
    smoke: ClassVar[dict[str, Any]] = {}

    # Cost estimates for ``clipbench plan`` (clipbench/methods/work.py); ``config`` is resolved for the cell's
    # dataset. The defaults describe a method fed cached features that stores nothing.
    @classmethod
    def training_work(cls, config: MethodConfig, cell: CellShape, arch: Arch) -> EncoderWork:
        """Encoder passes of one training cell (cached features: none)."""
        return EncoderWork()

    @classmethod
    def eval_work(cls, config: MethodConfig, target: TargetShape, arch: Arch) -> EncoderWork:
        """Encoder passes of one evaluation (cached test features: none)."""
        return EncoderWork()

    @classmethod
    def state_bytes(cls, config: MethodConfig, cell: CellShape, arch: Arch) -> int:
        """Bytes of one stored training cell's state."""
        return 0

    def __init__(self, config: MethodConfig) -> None:
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def task_config(self, task: FitTask) -> MethodConfig:
        """``config`` resolved for the task's source dataset (a no-op on a config the pipeline already resolved)."""
        return resolve_config(self.config, task.dataset or task.space.dataset)

    def target_config(self, target: EvalTarget) -> MethodConfig:
        """``config`` resolved for the dataset the target's cell was trained on."""
        return resolve_config(self.config, target.train_space.dataset)

    @abc.abstractmethod
    def fit(self, task: FitTask) -> dict[str, float | int]:
        """Learn from ``task``; return scalar training diagnostics (losses, selected values)."""

    @abc.abstractmethod
    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        """Logits ``[N, len(target.space)]``; raise ``NotApplicable`` where the method has no answer."""

    def predictor(self, target: EvalTarget) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function scoring batches of ``x`` for ``target``. Override to do per-target work once (e.g. encode
        the target's prompts) when ``predict`` is called batch by batch; may raise ``NotApplicable``."""
        return lambda x: self.predict(x, target)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Learned tensors (saved as safetensors)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:  # noqa: B027 - stateless default
        """Restore what :meth:`state_dict` returned."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Registry-facing summary: inputs, class specificity, validation policy, first docstring line."""
        doc = (sys.modules[cls.__module__].__doc__ or "").strip()
        return {
            "name": cls.name,
            "requires": cls.requires.value,
            "uses_backbone": cls.needs_backbone(),
            "class_specific": cls.class_specific,
            "selection": cls.selection,
            "doc": doc.splitlines()[0] if doc else "",
        }

    @classmethod
    def needs_backbone(cls) -> bool:
        return cls.uses_backbone or cls.requires is Inputs.IMAGES

    @classmethod
    def selects(cls, config: MethodConfig) -> str:
        """What ``fit`` selects on ``FitTask.val`` under ``config`` (e.g. "C"); "" when it selects nothing. The one
        declaration of which methods select: the suite's ``selection`` (:mod:`clipbench.selection`) decides which
        validation set that is, and enters only these methods' cell keys."""
        return ""

    @classmethod
    def view_need(cls, config: MethodConfig, dataset: str, shots: int) -> ViewNeed | None:
        """The augmented views a cell of ``config`` (resolved for ``dataset``) at ``shots`` reads; ``None``: none.
        The extract stage caches exactly the views some planned cell needs (:mod:`clipbench.views`)."""
        return None


def train_class_index(target: EvalTarget) -> list[int]:
    """Rows of the training space for each target class, matched by class id; ``NotApplicable`` if any is unseen."""
    index = {cid: i for i, cid in enumerate(target.train_space.class_ids)}
    missing = [cid for cid in target.space.class_ids if cid not in index]
    if missing:
        raise NotApplicable(
            f"{len(missing)} of {len(target.space)} target classes were not trained "
            f"(e.g. {missing[0]!r}); class-specific weights cannot score them"
        )
    return [index[cid] for cid in target.space.class_ids]


def fit_counted(model: Method, task: FitTask) -> dict[str, Any]:
    """``model.fit(task)``'s diagnostics plus two exact counts, unless the method reports its own:
    ``steps`` (optimizer steps over the whole fit, every selection candidate included) and ``trainable_params``
    (the parameters of the largest optimizer used: one candidate's trainable set; 0 when nothing is optimised)."""
    sizes: dict[int, int] = {}
    steps = 0

    def count(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        nonlocal steps
        steps += 1
        unique = {id(p): p.numel() for group in optimizer.param_groups for p in group["params"]}
        sizes[id(optimizer)] = sum(unique.values())

    hook = register_optimizer_step_post_hook(count)
    try:
        diagnostics = model.fit(task)
    finally:
        hook.remove()
    return {"steps": steps, "trainable_params": max(sizes.values(), default=0), **diagnostics}
