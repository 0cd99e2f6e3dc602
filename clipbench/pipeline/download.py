"""Stage ``download``: fetch or generate a dataset under ``data_root``, validate it, write its index."""

from __future__ import annotations

from pathlib import Path

from clipbench.data import get_dataset
from clipbench.data.coop import validate
from clipbench.data.download import install
from clipbench.data.index import DatasetIndex
from clipbench.layout import Layout


def run(*, dataset: str, data_root: Path, layout: Layout, counts: str = "exact") -> Path:
    """Prepare ``dataset`` if needed (generated datasets are always regenerated), validate it, index it.

    ``counts`` is ``SuiteConfig.data_counts``: "exact" also asserts the published split sizes.
    """
    spec = get_dataset(dataset)
    if getattr(spec, "generated", False):
        spec.prepare(data_root)
    elif not spec.is_ready(data_root):
        if getattr(spec, "sources", ()):
            install(spec, data_root, lambda staging_root: validate(spec, staging_root, counts))
        else:
            spec.prepare(data_root)  # explains the manual steps
    splits = validate(spec, data_root, counts)
    image_root = "/".join(p for p in (spec.dirname, spec.image_root) if p)
    index = DatasetIndex(dataset, image_root, splits)
    return index.write(layout.dataset_index(dataset))
