"""The suite configuration: ``params.yaml`` resolved once into typed, frozen, validated objects.

Every stage and CLI command loads the suite through :func:`load_suite`; unknown keys, wrong types, unknown
method/dataset/backbone names and inconsistent protocols are rejected here, before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from clipbench import recipes, safeyaml
from clipbench.backbones.registry import BACKBONES
from clipbench.backbones.toy_pretrain import ToyPretrainConfig
from clipbench.data import DATASETS, metadata
from clipbench.data.coop import COUNT_MODES
from clipbench.data.custom import CustomDataset, register_custom_datasets
from clipbench.data.images import DEFAULT_MAX_PIXELS
from clipbench.data.integrity import IMAGE_CHECKS, OVERLAP_MODES
from clipbench.errors import ConfigError
from clipbench.methods import METHODS, MethodConfig
from clipbench.protocols import REGISTRY as PROTOCOL_REGISTRY
from clipbench.protocols import Protocols, get_protocol
from clipbench.runtime import RuntimeConfig
from clipbench.selection import DEFAULT as DEFAULT_SELECTION
from clipbench.selection import SELECTIONS
from clipbench.typed import parse, stable_hash, to_plain


@dataclass(frozen=True)
class FeatureConfig:
    """How cached image embeddings are computed (the extract stage)."""

    # Each method's augmentation recipe and view count come from its own config (``Method.view_need``); this caps
    # the distinct views per image any cell reads (then epoch/step t reads view t mod cap); null: no cap, every
    # epoch or step reads a fresh view, as the references do
    max_views: int | None = None
    batch_size: int = 256  # images per encoder forward pass
    seed: int = 0  # base seed of the per-(image, view) augmentation streams

    def validate(self, where: str) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"{where}.batch_size: must be positive, got {self.batch_size}")
        if self.max_views is not None and self.max_views <= 0:
            raise ConfigError(f"{where}.max_views: must be positive or null, got {self.max_views}")


@dataclass(frozen=True)
class TextConfig:
    template_set: str = "custom"  # key into metadata/templates.json for every dataset


@dataclass(frozen=True)
class TrackingConfig:
    """Where ``track`` logs; a store that cannot be reached or written only warns (:mod:`clipbench.tracking`)."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"  # relative sqlite paths resolve against the project root
    experiment_prefix: str = "clipbench"
    # seconds to wait for an http(s) server before ``track`` gives up (probe, then each MLflow request)
    timeout_s: float = 5.0
    # MLflow's own retries of a failed http(s) request while ``track`` runs (MLflow's default is 7, minutes)
    retries: int = 2

    def validate(self, where: str) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"{where}.timeout_s: must be > 0 seconds, got {self.timeout_s!r}")
        if self.retries < 0:
            raise ConfigError(f"{where}.retries: must be >= 0, got {self.retries!r}")


@dataclass(frozen=True)
class SuiteConfig:
    """Everything ``params.yaml`` says."""

    suite: str
    backbones: tuple[str, ...]
    datasets: tuple[str, ...]  # training sources
    methods: tuple[str, ...]
    protocols: Protocols  # enabled protocol name -> its typed config (clipbench/protocols/)
    targets: tuple[str, ...] = ()  # test-only datasets (domain-shift targets)
    data_root: str = "data/raw"
    # "exact": assert the published split sizes (spec §3.1, §3.5); "classes": only the class counts (subsets,
    # test fixtures). Structure (files, labels, every class in every split) is always checked.
    data_counts: str = "exact"
    # how the download stage checks every listed image before any compute: "structure" (header + end marker),
    # "decode" (full decode, slow) or "off" (containment only); see clipbench/data/integrity.py
    image_check: str = "structure"
    # a test image byte-identical to a train/val image: "refuse" (test leakage) or "warn" (docs/rules.md)
    train_test_overlap: str = "refuse"
    # user datasets (folder-per-class tree or CSV lists), registered under their key: clipbench/data/custom.py
    custom_datasets: dict[str, CustomDataset] = field(default_factory=lambda: MappingProxyType({}))
    method_params: dict[str, dict[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    # the validation set of the methods that select (Method.selects): "fewshot_val" (min(K, 4) per class) or
    # "full_val" (each source dataset's own validation split); see clipbench/selection.py
    selection: str = DEFAULT_SELECTION
    # images with more pixels are refused before decoding (decompression bombs); Pillow's own warning threshold
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    features: FeatureConfig = FeatureConfig()
    text: TextConfig = TextConfig()
    toy_pretrain: ToyPretrainConfig = ToyPretrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    runtime: RuntimeConfig = RuntimeConfig()  # where and how cells run; never part of a cell key

    def validate(self, where: str) -> None:
        if self.data_counts not in COUNT_MODES:
            raise ConfigError(f"{where}.data_counts: {self.data_counts!r} is not one of {', '.join(COUNT_MODES)}")
        if self.image_check not in IMAGE_CHECKS:
            raise ConfigError(f"{where}.image_check: {self.image_check!r} is not one of {', '.join(IMAGE_CHECKS)}")
        if self.train_test_overlap not in OVERLAP_MODES:
            raise ConfigError(
                f"{where}.train_test_overlap: {self.train_test_overlap!r} is not one of {', '.join(OVERLAP_MODES)}"
            )
        if self.selection not in SELECTIONS:
            raise ConfigError(f"{where}.selection: {self.selection!r} is not one of {', '.join(SELECTIONS)}")
        register_custom_datasets(self.custom_datasets, f"{where}.custom_datasets")  # before names are checked
        _check_names(self, where)
        _check_protocols(self, where)
        _check_data_root(self.data_root, f"{where}.data_root")
        if self.max_image_pixels <= 0:
            raise ConfigError(f"{where}.max_image_pixels: must be a positive integer, got {self.max_image_pixels}")
        for name in self.methods:
            self._check_method_params(name, where)
        unknown = sorted(set(self.method_params) - set(METHODS.names()))
        if unknown:
            raise ConfigError(f"{where}.method_params: {METHODS.unknown_message(unknown[0])}")
        unused = [n for n, v in self.method_params.items() if v and n not in self.methods]
        if unused:
            raise ConfigError(
                f"{where}.method_params.{unused[0]}: set, but {unused[0]!r} is not in methods, so it would be "
                "ignored; add the method to methods or remove its entry"
            )
        for dataset in self.all_datasets():
            metadata.check_templates(
                dataset, metadata.templates(dataset, self.text.template_set), f"{where}.text.template_set"
            )
        recipes.check(self, where)

    def _check_method_params(self, name: str, where: str) -> None:
        """Parse ``method_params.<name>`` and each of its protocol overrides now, so that a wrong key, value or
        protocol fails before any work (:meth:`method_config` gives the resolution order)."""
        at = f"{where}: method_params.{name}"
        _, overrides = split_overrides(METHODS.get(name).Config, self.method_params.get(name), at)
        for protocol in overrides:
            if protocol not in self.protocols:
                raise ConfigError(
                    f"{at}.{protocol}: set, but protocol {protocol!r} is not enabled in protocols, so it would be "
                    "ignored; enable the protocol or remove the override"
                )
        for protocol in (None, *overrides):
            self.method_config(name, protocol)

    def method_config(self, name: str, protocol: str | None = None) -> MethodConfig:
        """The method's frozen config under ``protocol`` (``None``: its protocol-free config).

        Resolution, each step overriding the one before: the ``Config`` dataclass defaults <- the plain fields of
        ``method_params.<name>`` <- ``method_params.<name>.<protocol>`` (a mapping of ``Config`` fields, when
        that protocol has one) <- the config's ``by_dataset[dataset]`` entry, applied per training cell by
        :func:`~clipbench.methods.resolve_config` (the reference's per-dataset settings stay innermost). A protocol
        override may not hold ``by_dataset`` (one per-dataset table per method, shared by its protocols) nor
        another protocol; :func:`clipbench.protocols.training_units` decides which protocols share a model.
        """
        cls, where = METHODS.get(name).Config, f"params.yaml: method_params.{name}"
        fields, overrides = split_overrides(cls, self.method_params.get(name), where)
        if protocol not in overrides:
            return parse(cls, fields, where)
        return parse(cls, {**fields, **overrides[protocol]}, f"{where}.{protocol}")

    def overridden(self, name: str) -> tuple[str, ...]:
        """The protocols with an override in ``method_params.<name>``, in registry order."""
        _, overrides = split_overrides(METHODS.get(name).Config, self.method_params.get(name), "")
        return tuple(overrides)

    def method_config_hash(self, name: str, protocol: str | None = None) -> str:
        return stable_hash({"method": name, "config": self.method_config(name, protocol)})

    def all_datasets(self) -> tuple[str, ...]:
        return self.datasets + self.targets


def split_overrides(cls: type, params: Any, where: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``method_params.<m>`` as (plain ``Config`` fields, protocol name -> its override), both plain data, the
    overrides in registry order. A key that is neither a field nor a registered protocol, a nested protocol key
    and a ``by_dataset`` inside a protocol override are errors naming the key path."""
    params = to_plain(params or {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(params).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    fields, overrides = {}, {}
    for key, value in params.items():
        if key in names:
            fields[key] = value
        elif key in PROTOCOL_REGISTRY:
            overrides[key] = _protocol_override(cls, names, value, f"{where}.{key}")
        else:
            raise ConfigError(
                f"{where}.{key}: unknown key for {cls.__name__}; valid keys: {', '.join(names)}, or a protocol "
                f"({', '.join(PROTOCOL_REGISTRY.in_order())}) holding that protocol's overrides of these fields"
            )
    return fields, {p: overrides[p] for p in PROTOCOL_REGISTRY.in_order() if p in overrides}


def _protocol_override(cls: type, names: list[str], value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(value).__name__} {value!r}")
    for key in value:
        if key in PROTOCOL_REGISTRY:
            raise ConfigError(f"{where}.{key}: protocol overrides cannot be nested; set {key} beside {where}")
        if key == "by_dataset":
            raise ConfigError(
                f"{where}.by_dataset: per-dataset settings cannot be set per protocol; the method's one by_dataset "
                "table applies after every protocol override"
            )
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key for {cls.__name__}; valid keys: {', '.join(names)}")
    return value


def _check_names(cfg: SuiteConfig, where: str) -> None:
    for key, registry, names in (
        ("backbones", BACKBONES, cfg.backbones),
        ("datasets", DATASETS, cfg.datasets),
        ("targets", DATASETS, cfg.targets),
        ("methods", METHODS, cfg.methods),
    ):
        for i, name in enumerate(names):
            if name not in registry:
                raise ConfigError(f"{where}.{key}[{i}]: {registry.unknown_message(name)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.{key}: duplicate names in {list(names)}")
    both = sorted(set(cfg.datasets) & set(cfg.targets))
    if both:
        raise ConfigError(f"{where}: {both} listed in both datasets and targets; a dataset is one or the other")
    for i, name in enumerate(cfg.datasets):
        if DATASETS.get(name).test_only:
            raise ConfigError(f"{where}.datasets[{i}]: {name!r} has no training split; list it under targets")


def _check_protocols(cfg: SuiteConfig, where: str) -> None:
    if not cfg.protocols:
        raise ConfigError(f"{where}.protocols: enable at least one of {', '.join(PROTOCOL_REGISTRY.in_order())}")
    for name, config in cfg.protocols.items():
        p = get_protocol(name)
        for key, names in p.sources(config).items():
            _require_in(names, cfg.datasets, f"{where}.protocols.{name}.{key}", "datasets")
        for key, names in p.targets(config).items():
            _require_in(names, cfg.all_datasets(), f"{where}.protocols.{name}.{key}", "datasets or targets")


def _check_data_root(data_root: str, where: str) -> None:
    path = Path(data_root)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: {data_root!r} is a file, not a folder; point data_root at the datasets folder")


def _require_in(names: tuple[str, ...], allowed: tuple[str, ...], where: str, listing: str) -> None:
    missing = [n for n in names if n not in allowed]
    if missing:
        raise ConfigError(f"{where}: {missing} not listed under {listing} in params.yaml; add them there")


def load_suite(path: Path | str = "params.yaml") -> SuiteConfig:
    """Read, validate and freeze the suite configuration from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found; run from the project root or pass --params")
    data: Any = safeyaml.load(path)
    return parse(SuiteConfig, expand_methods(data, path.name), f"{path.name}")


ALL_METHODS = "all"


def expand_methods(data: Any, where: str) -> Any:
    """``methods: all`` means every registered method (in registry order); any other string is an error."""
    if not isinstance(data, dict) or not isinstance(data.get("methods"), str):
        return data
    if data["methods"] != ALL_METHODS:
        raise ConfigError(
            f"{where}.methods: {data['methods']!r} is neither a list of method names nor "
            f"{ALL_METHODS!r} (every registered method)"
        )
    return {**data, "methods": METHODS.names()}
