"""Shared reader for the ImageNet family in the CoOp layout (spec §3.3, §3.5, §5.4).

Classes are identified by WordNet id (``class_ids``), never by name: CLIP's curated ImageNet names repeat
("missile", "sunglasses"). Names come from the dataset folder's ``classnames.txt`` (CoOp asks for a copy in
each folder); when that copy is absent the bundled ``metadata/imagenet_classnames.txt`` (the same file) is
used. Image lists are sorted by file name inside each class folder (CoOp lists them with unsorted
``os.listdir``, which depends on the file system; spec §4.1 deviation).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from clipbench.data import metadata
from clipbench.data.base import DatasetSplits
from clipbench.data.coop import CoopSpec, class_folders, folder_records, read_wnid_names
from clipbench.errors import DataError


def imagenet_classes(dataset_dir: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(wnids, names) in label order: the folder's ``classnames.txt`` if present, else the bundled copy."""
    local = dataset_dir / "classnames.txt"
    ids, names = read_wnid_names(local if local.is_file() else metadata.IMAGENET_CLASSNAMES)
    bundled = read_wnid_names(metadata.IMAGENET_CLASSNAMES)[0]
    if sorted(ids) != sorted(bundled):
        raise DataError(
            f"{local}: its wnids are not the 1000 ImageNet-1k classes; replace it with CoOp's "
            "classnames.txt (or delete it to use the bundled copy)"
        )
    order = sorted(range(len(ids)), key=ids.__getitem__)  # labels follow sorted wnid order
    return tuple(ids[i] for i in order), tuple(names[i] for i in order)


def copy_classnames(staged: Path) -> None:
    """Put the bundled ``classnames.txt`` into a freshly downloaded ImageNet-family folder (CoOp asks for it)."""
    shutil.copyfile(metadata.IMAGENET_CLASSNAMES, staged / "classnames.txt")


class WnidFolderTarget(CoopSpec):
    """A test-only ImageNet variant whose ``image_root`` holds one folder per wnid."""

    test_only = True
    imagenet_classes = True
    subset: ClassVar[bool] = False  # True: a subset of the 1000 classes (ImageNet-A/R), relabelled 0..n-1

    def finish_install(self, staged: Path) -> None:
        copy_classnames(staged)

    def read(self, data_root: Path) -> DatasetSplits:
        root = self.require_layout(data_root)
        wnids, names = imagenet_classes(root)
        folders = class_folders(self.images(data_root), self.fix)
        unknown = sorted(set(folders) - set(wnids))
        if unknown:
            raise DataError(
                f"{self.images(data_root)}: folders {unknown[:5]} are not ImageNet wnids; "
                f"the archive is not {self.name}. {self.fix}"
            )
        if not self.subset and folders != list(wnids):
            raise DataError(
                f"{self.images(data_root)}: {len(set(wnids) - set(folders))} of the 1000 wnid folders "
                f"are missing; the archive is incomplete. {self.fix}"
            )
        index = {w: i for i, w in enumerate(wnids)}
        ids = tuple(folders)
        sub_names = tuple(names[index[w]] for w in folders)
        test = folder_records(self.images(data_root), folders, list(range(len(folders))), sub_names)
        return DatasetSplits((), (), test, ids, sub_names)
