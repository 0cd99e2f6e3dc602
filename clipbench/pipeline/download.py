"""Stage ``download``: fetch or generate a dataset under ``data_root``, validate it, write its index."""

from __future__ import annotations

from pathlib import Path

from clipbench.data import get_dataset
from clipbench.data.coop import validate
from clipbench.data.download import install
from clipbench.data.index import DatasetIndex
from clipbench.data.integrity import check_duplicates, check_images
from clipbench.errors import DataError
from clipbench.layout import Layout


def run(
    *,
    dataset: str,
    data_root: Path,
    layout: Layout,
    counts: str = "exact",
    image_check: str = "structure",
    overlap: str = "refuse",
) -> Path:
    """Prepare ``dataset`` if needed (generated datasets are always regenerated), validate it, index it.

    ``counts`` is ``SuiteConfig.data_counts``: "exact" also asserts the published split sizes. ``image_check``
    is ``SuiteConfig.image_check`` (see :mod:`clipbench.data.integrity`); unless it is "off", byte-identical
    images are compared (``overlap`` is ``SuiteConfig.train_test_overlap``). Nothing is written unless every check
    passes.
    """
    spec = get_dataset(dataset)
    if getattr(spec, "generated", False):
        spec.prepare(data_root)
    else:
        require_data_root(data_root)
        if not spec.is_ready(data_root):
            if getattr(spec, "sources", ()):
                install(spec, data_root, lambda staging_root: validate(spec, staging_root, counts))
            else:
                spec.prepare(data_root)  # explains the manual steps
    splits = validate(spec, data_root, counts)
    check_images(
        spec.images(data_root), [*splits.train, *splits.val, *splits.test], image_check, getattr(spec, "fix", "")
    )
    if image_check != "off":
        check_duplicates(spec.images(data_root), splits, overlap, dataset)
    image_root = "/".join(p for p in (spec.dirname, spec.image_root) if p)
    index = DatasetIndex(dataset, image_root, splits)
    return index.write(layout.dataset_index(dataset))


def require_data_root(data_root: Path) -> None:
    """A missing ``data_root`` is a configuration mistake, not a reason to download into a new folder."""
    if not Path(data_root).is_dir():
        raise DataError(
            f"data_root {data_root} (params.yaml key `data_root`) does not exist; create the folder "
            "(datasets are downloaded into it) or point `data_root` at your CoOp data folder"
        )
