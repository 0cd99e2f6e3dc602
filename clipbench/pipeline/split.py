"""Stage ``split``: K-shot manifests (CoOp/Dassl sampling) for every (shots, seed) the protocols need."""

from __future__ import annotations

from pathlib import Path

from clipbench.config import SuiteConfig
from clipbench.data.index import load_index
from clipbench.data.kshot import make_kshot, write_manifest
from clipbench.io import atomic_directory
from clipbench.layout import Layout
from clipbench.protocols import split_needs


def run(*, dataset: str, cfg: SuiteConfig, layout: Layout) -> list[Path]:
    index = load_index(layout.dataset_index(dataset))
    written = []
    with atomic_directory(layout.splits(dataset)) as tmp:
        for shots, seed in split_needs(cfg, dataset):
            split = make_kshot(dataset, index.splits.train, index.splits.val, shots, seed)
            written.append(write_manifest(split, tmp).name)
    return [layout.splits(dataset) / name for name in written]
