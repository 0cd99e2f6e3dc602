"""Base-to-new generalization (spec §5.2): train on the base half of the classes; score base test images among
base classes and new test images among new classes (new classes reach the method only through its text
classifier). H per dataset comes from the seed-averaged base and new; the average H is H(mean base, mean new)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipbench.cells import EvalCell, TrainCell
from clipbench.protocols.base import Protocol, check_positive, check_shots, check_unique
from clipbench.protocols.entries import cell_entry, derived, harmonic_of, mean

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd


@dataclass(frozen=True)
class Base2NewProtocol:
    """Train on base classes, test base and new classes separately."""

    datasets: tuple[str, ...]
    shots: int = 16
    seeds: tuple[int, ...] = (1, 2, 3)

    def validate(self, where: str) -> None:
        check_shots((self.shots,), f"{where}.shots")
        check_positive(self.seeds, f"{where}.seeds")
        check_unique(self.datasets, f"{where}.datasets")


class Base2New(Protocol):
    Config = Base2NewProtocol
    title = (
        "Base-to-new generalization (top-1 %; H from seed-averaged base and new; average H = H(mean base, mean new))"
    )
    plot_prefix = "base_new_"
    series_file = "base_new.csv"

    def cells(self, config: Base2NewProtocol) -> list[EvalCell]:
        cells = []
        for d in config.datasets:
            for s in config.seeds:
                train = TrainCell(d, "base", config.shots, s)
                cells += [EvalCell(self.name, train, d, "base", "base"), EvalCell(self.name, train, d, "new", "new")]
        return cells

    def sources(self, config: Base2NewProtocol) -> dict[str, tuple[str, ...]]:
        return {"datasets": config.datasets}

    def entries(self, stats: pd.DataFrame) -> list[dict]:
        out: list[dict] = []
        for (backbone, shots), b in stats.groupby(["backbone", "shots"], sort=True):
            datasets = sorted(set(b.dataset))
            for method in sorted(set(b.method)):
                key = {"protocol": self.name, "method": method, "backbone": backbone, "shots": shots}
                bases, news = [], []
                for d in datasets:
                    base, new = (
                        cell_entry(b, {**key, "source": d, "metric": m}, d, f"{d} {m}") for m in ("base", "new")
                    )
                    h = derived([base, new], {**key, "source": "", "metric": "H"}, d, f"{d} H", "H", harmonic_of)
                    bases.append(base)
                    news.append(new)
                    out += [base, new, h]
                avg = [
                    derived(parts, {**key, "source": "", "metric": m}, "average", f"average {m}", "average", mean)
                    for parts, m in ((bases, "base"), (news, "new"))
                ]
                h = derived(avg, {**key, "source": "", "metric": "H"}, "average", "average H", "H", harmonic_of)
                out += [*avg, h]
        return out

    def published_average(self) -> frozenset[str]:
        from clipbench.reference import CLASSIFICATION

        return frozenset(CLASSIFICATION)

    def series(self, entries: pd.DataFrame) -> dict[str, pd.DataFrame]:
        from clipbench import plots

        return {self.series_file: plots.base_new_series(entries, self.name)}

    def draw(self, entries: pd.DataFrame, directory: Path) -> list[str]:
        from clipbench import plots

        return plots.scatter_pngs(plots.base_new_series(entries, self.name), directory, self.plot_prefix)
