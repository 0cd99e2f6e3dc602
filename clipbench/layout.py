"""Where every artifact lives, relative to the project root (the same names appear in ``dvc.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TABLES_DIR = "tables"  # reports/tables/: <protocol>.md and <protocol>.csv of every registered protocol


@dataclass(frozen=True)
class Layout:
    """Path builders for one project root."""

    root: Path = Path(".")

    def dataset_index(self, dataset: str) -> Path:
        return self.root / "data" / "index" / f"{dataset}.json"

    def splits(self, dataset: str) -> Path:
        return self.root / "data" / "splits" / dataset

    def backbone(self, backbone: str) -> Path:
        return self.root / "models" / "backbones" / backbone

    def features(self, backbone: str, dataset: str) -> Path:
        return self.root / "features" / backbone / dataset

    def fit_features(self, backbone: str, dataset: str) -> Path:
        return self.features(backbone, dataset) / "fit"

    def test_features(self, backbone: str, dataset: str) -> Path:
        return self.features(backbone, dataset) / "test"

    def text_features(self, backbone: str, dataset: str, template_set: str | None = None) -> Path:
        """The suite's text classifier, or (``template_set``) an extra one of a method's text recipe."""
        if template_set is None:
            return self.features(backbone, dataset) / "text.safetensors"
        return self.text_sets(backbone, dataset) / f"{template_set}.safetensors"

    def text_sets(self, backbone: str, dataset: str) -> Path:
        """The folder of the extra text classifiers (:mod:`clipbench.recipes`; empty without per-method recipes)."""
        return self.features(backbone, dataset) / "text"

    def models(self, backbone: str, method: str, dataset: str) -> Path:
        return self.root / "models" / backbone / method / dataset

    def results(self, backbone: str, method: str) -> Path:
        return self.root / "results" / backbone / method

    def code(self, stage: str, item: str | None = None) -> Path:
        """The code fingerprint file a stage depends on (``code/<stage>.json`` or ``code/<stage>/<item>.json``)."""
        base = self.root / "code"
        return base / f"{stage}.json" if item is None else base / stage / f"{item}.json"

    def reports(self) -> Path:
        return self.root / "reports"

    def tables(self) -> Path:
        return self.reports() / TABLES_DIR
