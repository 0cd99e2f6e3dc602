"""Few-shot classification (spec §5.1): train on all classes of each K-shot split (K, seed), score the full test
split; the table has a row per shot count and averages over the datasets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipbench.cells import EvalCell, TrainCell
from clipbench.protocols.base import Protocol, check_positive, check_shots, check_unique
from clipbench.protocols.entries import cell_entry, derived, mean

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd


@dataclass(frozen=True)
class FewShotProtocol:
    """K-shot training on all classes, evaluated on the full test set."""

    datasets: tuple[str, ...]
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    seeds: tuple[int, ...] = (1, 2, 3)

    def validate(self, where: str) -> None:
        check_shots(self.shots, f"{where}.shots")
        check_positive(self.seeds, f"{where}.seeds")
        check_unique(self.datasets, f"{where}.datasets")


class FewShot(Protocol):
    Config = FewShotProtocol
    title = "Few-shot classification (top-1 %, mean ± std over seeds; average over the datasets)"
    plot_prefix = "few_shot_"
    series_file = "few_shot_curves.csv"

    def cells(self, config: FewShotProtocol) -> list[EvalCell]:
        return [
            EvalCell(self.name, TrainCell(d, "all", k, s), d, "all", "acc")
            for d in config.datasets
            for k in config.shots
            for s in config.seeds
        ]

    def sources(self, config: FewShotProtocol) -> dict[str, tuple[str, ...]]:
        return {"datasets": config.datasets}

    def entries(self, stats: pd.DataFrame) -> list[dict]:
        out: list[dict] = []
        for backbone, b in stats.groupby("backbone", sort=True):
            datasets = sorted(set(b.dataset))
            for method in sorted(set(b.method)):
                for shots in sorted(set(b.shots)):
                    key = {
                        "protocol": self.name,
                        "method": method,
                        "backbone": backbone,
                        "shots": shots,
                        "metric": "acc",
                    }
                    row = [cell_entry(b, {**key, "source": d}, d, d) for d in datasets]
                    out += row + [derived(row, {**key, "source": ""}, "average", "average", "average", mean)]
        return out

    def setting(self, shots: int, metric: str) -> str:
        return f"{int(shots)}shot_{metric}"

    def run_metric(self, shots: int, metric: str) -> str:
        return f"{metric}_{int(shots)}shot"

    def published_average(self) -> frozenset[str]:
        from clipbench.reference import CLASSIFICATION

        return frozenset(CLASSIFICATION)

    def series(self, entries: pd.DataFrame) -> dict[str, pd.DataFrame]:
        from clipbench import plots

        return {self.series_file: plots.curve_series(entries, self.name)}

    def draw(self, entries: pd.DataFrame, directory: Path) -> list[str]:
        from clipbench import plots

        return plots.curve_pngs(plots.curve_series(entries, self.name), directory, self.plot_prefix)
