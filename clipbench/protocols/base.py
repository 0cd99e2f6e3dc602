"""What a protocol is: everything the suite, the reports and the tracking need to know about one of them.

A protocol module defines a frozen ``Config`` dataclass (its ``protocols.<name>`` section of ``params.yaml``)
and a :class:`Protocol` subclass that turns such a config into evaluation cells, turns cell statistics into
the numbers of its table, names those numbers for ``metrics.json`` and MLflow, and says which published
numbers it can be compared with. Its registry key (``clipbench/protocols/__init__.py``) is its name
everywhere: in result rows, cell names, report files, metric keys and MLflow experiments.

Protocol modules import nothing heavy at module level: the suite loads them to parse ``params.yaml``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from clipbench.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from clipbench.cells import EvalCell


MAX_SHOTS = 10_000  # images per class; no published protocol goes past 16
MAX_SEED = 2**31 - 1  # every RNG clipbench seeds (random, numpy, torch) accepts it


def check_positive(values: tuple[int, ...], where: str, high: int | None = None) -> None:
    """Shots and seeds: at least one, all in 1..``high`` (default: :data:`MAX_SEED`), no duplicates."""
    high = MAX_SEED if high is None else high
    if not values:
        raise ConfigError(f"{where}: must list at least one value")
    bad = [v for v in values if not 0 < v <= high]
    if bad:
        raise ConfigError(f"{where}: values must be positive integers up to {high}, got {bad}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: duplicate values in {list(values)}")


def check_shots(values: tuple[int, ...], where: str) -> None:
    check_positive(values, where, MAX_SHOTS)


def check_unique(names: tuple[str, ...], where: str) -> None:
    """A protocol lists each dataset once (a repeat would plan the same cells twice)."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{where}: {repeated[0]!r} is listed twice; list each dataset once")


class Protocol(ABC):
    """One protocol; instances are stateless apart from ``name`` (its registry key)."""

    Config: ClassVar[type]  # frozen dataclass parsed from ``protocols.<name>``
    title: ClassVar[str]  # heading of its table in the reports
    table_keys: ClassVar[tuple[str, ...]] = ("method", "backbone", "shots")  # one table row per these values
    plot_prefix: ClassVar[str] = ""  # its PNGs in reports/plots/ start with this (none: it draws no plot)

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def cells(self, config: Any) -> list[EvalCell]:
        """Every evaluation ``config`` asks for, in a stable order."""

    @abstractmethod
    def sources(self, config: Any) -> dict[str, tuple[str, ...]]:
        """Config field -> the datasets it trains on (each must be listed under ``datasets`` in params.yaml)."""

    def targets(self, config: Any) -> dict[str, tuple[str, ...]]:
        """Config field -> the datasets it only tests on (each listed under ``datasets`` or ``targets``)."""
        return {}

    @abstractmethod
    def entries(self, stats: pd.DataFrame) -> list[dict]:
        """The numbers of its table from the cell statistics of this protocol (:func:`clipbench.report.cell_stats`)."""

    def setting(self, shots: int, metric: str) -> str:
        """The last part of a ``metrics.json`` key (``<protocol>/<backbone>/<method>/<dataset>/<setting>``)."""
        return metric

    def run_metric(self, shots: int, metric: str) -> str:
        """The name of a metric in an MLflow parent run, after ``<dataset or average>/``."""
        return metric

    def published_average(self) -> frozenset[str]:
        """The datasets a published average of this protocol is over (empty: no published average)."""
        return frozenset()

    def published_comparable(self, entry: dict) -> bool:
        """Whether published numbers can describe ``entry`` at all (method, dataset, shots, metric and templates
        are compared by :func:`clipbench.reference.match`): an average only over exactly the published datasets."""
        if entry["column"] != "average":
            return True
        averaged = frozenset(filter(None, str(entry.get("datasets") or "").split(";")))
        return bool(self.published_average()) and averaged == self.published_average()

    def series(self, entries: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """File name -> the tidy series behind its plots (``reports/<name>``, for ``dvc plots``)."""
        return {}

    def draw(self, entries: pd.DataFrame, directory: Path) -> list[str]:
        """Write its PNGs (named ``<plot_prefix>…``) into ``directory``; return their names."""
        return []
