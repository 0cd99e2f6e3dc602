"""Stage ``download``: fetch or generate a dataset under ``data_root`` and write its validated index."""

from __future__ import annotations

from pathlib import Path

from clipbench.data import get_dataset
from clipbench.data.index import DatasetIndex
from clipbench.layout import Layout


def run(*, dataset: str, data_root: Path, layout: Layout) -> Path:
    """Prepare ``dataset`` if needed (generated datasets are always regenerated), validate it, index it."""
    spec = get_dataset(dataset)
    if getattr(spec, "generated", False) or not spec.is_ready(data_root):
        spec.prepare(data_root)
    splits = spec.read(data_root)
    index = DatasetIndex(dataset, f"{spec.dirname}/{spec.image_root}", splits)
    return index.write(layout.dataset_index(dataset))
