"""Transfer protocols (spec §5.3, §5.4): train on ``source``'s K-shot split (all classes), score the source test
split and, unchanged, each target's test split with the target's own classes. The table shows the source
accuracy beside each target and the target average."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from clipbench.cells import EvalCell, TrainCell
from clipbench.errors import ConfigError
from clipbench.protocols.base import Protocol, check_positive, check_shots, check_unique
from clipbench.protocols.entries import cell_entry, derived, mean

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TransferProtocol:
    """Train on ``source`` (all classes), evaluate unchanged on ``targets``."""

    source: str
    targets: tuple[str, ...]
    shots: int = 16
    seeds: tuple[int, ...] = (1, 2, 3)

    def validate(self, where: str) -> None:
        check_shots((self.shots,), f"{where}.shots")
        check_positive(self.seeds, f"{where}.seeds")
        if not self.targets:
            raise ConfigError(f"{where}.targets: must list at least one dataset")
        check_unique(self.targets, f"{where}.targets")
        if self.source in self.targets:
            raise ConfigError(
                f"{where}.targets: {self.source!r} is also the source (its accuracy is reported beside the "
                "targets already); remove it from targets"
            )


class Transfer(Protocol):
    """Shared by cross-dataset transfer and domain generalization; a subclass names its average and targets."""

    Config = TransferProtocol
    table_keys = ("method", "backbone", "source", "shots")
    average_label: ClassVar[str]  # the table column of the target average

    def cells(self, config: TransferProtocol) -> list[EvalCell]:
        cells = []
        for s in config.seeds:
            train = TrainCell(config.source, "all", config.shots, s)
            cells += [EvalCell(self.name, train, t, "all", "acc") for t in (config.source, *config.targets)]
        return cells

    def sources(self, config: TransferProtocol) -> dict[str, tuple[str, ...]]:
        return {"source": (config.source,)}

    def targets(self, config: TransferProtocol) -> dict[str, tuple[str, ...]]:
        return {"targets": config.targets}

    def entries(self, stats: pd.DataFrame) -> list[dict]:
        out: list[dict] = []
        for (backbone, source, shots), b in stats.groupby(["backbone", "source", "shots"], sort=True):
            targets = sorted(set(b.dataset) - {source})
            for method in sorted(set(b.method)):
                key = {
                    "protocol": self.name,
                    "method": method,
                    "backbone": backbone,
                    "source": source,
                    "shots": shots,
                    "metric": "acc",
                }
                row = [cell_entry(b, key, t, t) for t in targets]
                out += [
                    cell_entry(b, key, source, f"{source} (source)"),
                    *row,
                    derived(row, key, "average", self.average_label, "average", mean),
                ]
        return out

    def published_comparable(self, entry: dict) -> bool:
        """Every published transfer number is from an ImageNet source."""
        from clipbench.reference import TRANSFER_SOURCE

        return entry["source"] == TRANSFER_SOURCE and super().published_comparable(entry)
