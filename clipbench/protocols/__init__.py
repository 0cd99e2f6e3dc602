"""The protocols, one module each, and the expansion of a suite into training and evaluation cells (spec §5).

A protocol is a :class:`~clipbench.protocols.base.Protocol` subclass in its own module, registered by one line
in :data:`REGISTRY`; registration order is the order of report sections and of evaluation cells. Adding a
protocol needs nothing else: ``params.yaml`` accepts ``protocols.<name>``, and the reports, metrics, plots,
MLflow experiments and ``clipbench compare --protocol`` pick it up from here.

A training cell serves every protocol that needs it whose method config is the same: the 16-shot all-class model
of a dataset that is both a few-shot dataset and the transfer source is trained once, unless a protocol override
(``method_params.<method>.<protocol>``) gives one of them another config; :func:`training_units` plans one model
per distinct resolved config and :func:`eval_units` pairs each evaluation with its model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from clipbench.errors import ConfigError
from clipbench.protocols.base import Protocol
from clipbench.registry import Registry
from clipbench.typed import parse

if TYPE_CHECKING:  # clipbench.cells imports torch (through clipbench.io); the CLI imports this module
    from clipbench.cells import EvalCell, TrainCell, TrainUnit
    from clipbench.config import SuiteConfig
    from clipbench.methods import MethodConfig

REGISTRY: Registry[type[Protocol]] = Registry(
    "protocol",
    {
        "few_shot": "clipbench.protocols.few_shot:FewShot",
        "base2new": "clipbench.protocols.base2new:Base2New",
        "cross_dataset": "clipbench.protocols.cross_dataset:CrossDataset",
        "domain_generalization": "clipbench.protocols.domain_generalization:DomainGeneralization",
    },
    base=Protocol,
)


@cache
def get_protocol(name: str) -> Protocol:
    """The protocol registered as ``name``; unknown names raise :class:`~clipbench.errors.UnknownNameError`."""
    return REGISTRY.get(name)(name)


def all_protocols() -> list[Protocol]:
    """Every registered protocol, in registration order."""
    return [get_protocol(name) for name in REGISTRY.in_order()]


class Protocols(Mapping[str, Any]):
    """The ``protocols:`` section of params.yaml: enabled protocol name -> its typed config, in registry order.

    A protocol absent from params.yaml (or set to null) is disabled; an unknown name is an error that lists
    the registered ones.
    """

    def __init__(self, configs: Mapping[str, Any]) -> None:
        unknown = [name for name in configs if name not in REGISTRY]
        if unknown:
            raise ConfigError(REGISTRY.unknown_message(unknown[0]))
        self._configs = MappingProxyType({n: configs[n] for n in REGISTRY.in_order() if n in configs})

    @classmethod
    def from_plain(cls, data: Any, where: str) -> Protocols:
        """Parse ``protocols:`` (see :func:`clipbench.typed.parse`); each section by its protocol's ``Config``."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{where}: expected a mapping of protocol name -> settings, got {type(data).__name__} {data!r}"
            )
        for name in data:
            if name not in REGISTRY:
                raise ConfigError(f"{where}: {REGISTRY.unknown_message(name)} Remove {name!r} or rename it.")
        return cls(
            {
                name: parse(get_protocol(name).Config, value, f"{where}.{name}")
                for name, value in data.items()
                if value is not None
            }
        )

    def __getitem__(self, name: str) -> Any:
        return self._configs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def __repr__(self) -> str:
        return f"Protocols({dict(self._configs)!r})"


def eval_cells(cfg: SuiteConfig) -> list[EvalCell]:
    """Every evaluation the suite asks for, in a stable order (protocols in registry order)."""
    return [cell for name, config in cfg.protocols.items() for cell in get_protocol(name).cells(config)]


def training_cells(cfg: SuiteConfig, dataset: str) -> list[TrainCell]:
    """Distinct training cells whose source is ``dataset``, sorted."""
    return sorted({c.train for c in eval_cells(cfg) if c.train.dataset == dataset})


def split_needs(cfg: SuiteConfig, dataset: str) -> list[tuple[int, int]]:
    """The (shots, seed) manifests the split stage must write for ``dataset``."""
    return sorted({(c.shots, c.seed) for c in training_cells(cfg, dataset)})


def protocol_configs(cfg: SuiteConfig, method: str, dataset: str) -> tuple[MethodConfig, dict[str, MethodConfig]]:
    """``method``'s configs for cells whose source is ``dataset``: (the protocol-free config, enabled protocol -> its
    config where that differs), all resolved for ``dataset``. Without overrides the mapping is empty; an override
    that the dataset's ``by_dataset`` entry overrides again changes nothing for that dataset."""
    from clipbench.methods import resolve_config
    from clipbench.typed import stable_hash

    where = f"params.yaml: method_params.{method}"
    base = resolve_config(cfg.method_config(method), dataset, where)
    configs = {p: resolve_config(cfg.method_config(method, p), dataset, f"{where}.{p}") for p in cfg.overridden(method)}
    return base, {p: c for p, c in configs.items() if p in cfg.protocols and stable_hash(c) != stable_hash(base)}


def eval_units(cfg: SuiteConfig, method: str) -> dict[EvalCell, TrainUnit]:
    """Every evaluation cell -> the training unit whose model it scores: its training cell under its protocol's
    config. The variant is "" for the protocol-free config (the cell's own directory and key, as without
    overrides), else the first protocol in registry order that trains this cell under this config: protocols
    whose configs resolve alike share one model."""
    from clipbench.cells import TrainUnit
    from clipbench.typed import stable_hash

    configs = {d: protocol_configs(cfg, method, d) for d in cfg.datasets}
    units, variants = {}, {}
    for cell in eval_cells(cfg):  # protocols in registry order
        base, own = configs[cell.train.dataset]
        config = own.get(cell.protocol)
        variant = "" if config is None else variants.setdefault((cell.train, stable_hash(config)), cell.protocol)
        units[cell] = TrainUnit(cell.train, variant, base if config is None else config)
    return units


def training_units(cfg: SuiteConfig, method: str, dataset: str) -> list[TrainUnit]:
    """The models ``method`` trains on ``dataset``: one per training cell and distinct resolved config, sorted.

    Without protocol overrides these are exactly :func:`training_cells`, each with variant "".
    """
    return sorted({u for c, u in eval_units(cfg, method).items() if c.train.dataset == dataset})
