"""Stage ``split``: K-shot manifests (CoOp/Dassl sampling) for every (shots, seed) the protocols need, and the
dataset's full validation list when the suite selects on it (``selection: full_val``, :mod:`clipbench.selection`)."""

from __future__ import annotations

import logging
from pathlib import Path

from clipbench import selection
from clipbench.config import SuiteConfig
from clipbench.data.fullval import write_full_val
from clipbench.data.index import load_index
from clipbench.data.kshot import make_kshot, short_classes, write_manifest
from clipbench.io import atomic_directory
from clipbench.layout import Layout
from clipbench.protocols import split_needs
from clipbench.rules import check_dataset

log = logging.getLogger(__name__)


def run(*, dataset: str, cfg: SuiteConfig, layout: Layout) -> list[Path]:
    index = load_index(layout.dataset_index(dataset))
    check_dataset(cfg, index)
    written = []
    needs = split_needs(cfg, dataset)
    warn_short_classes(dataset, index.splits.train, sorted({shots for shots, _ in needs}))
    with atomic_directory(layout.splits(dataset)) as tmp:
        for shots, seed in needs:
            split = make_kshot(dataset, index.splits.train, index.splits.val, shots, seed)
            written.append(write_manifest(split, tmp).name)
        if selection.needs_full_val(cfg, dataset) and index.splits.val:  # no own val split: few-shot fallback
            written.append(str(write_full_val(dataset, index.splits.val, tmp).relative_to(tmp)))
    return [layout.splits(dataset) / name for name in written]


def warn_short_classes(dataset: str, train: tuple, shot_values: list[int]) -> None:
    """Log classes with fewer training images than K: they keep all of them (CoOp/Dassl behaviour, spec §4.1)."""
    for shots in shot_values:
        short = short_classes(train, shots)
        if short:
            shown = ", ".join(f"{name!r} ({n})" for name, n in list(short.values())[:5])
            log.warning(
                "%s: %d classes have fewer than %d training images (%s%s); their K-shot subsets keep every "
                "image they have, as in CoOp",
                dataset,
                len(short),
                shots,
                shown,
                ", ..." if len(short) > 5 else "",
            )
