"""ImageNetV2 (matched frequency) in the CoOp layout (spec §3.5): test only, 1000 classes.

``imagenetv2/imagenetv2-matched-frequency-format-val/<i>/`` holds the images of class ``i``, the i-th wnid in
sorted order (= the line order of ImageNet's ``classnames.txt``).
"""

from __future__ import annotations

from pathlib import Path

from clipbench.data.base import DatasetSplits
from clipbench.data.coop import CoopSpec, Counts, class_folders, folder_records
from clipbench.data.download import Source
from clipbench.data.imagenet_family import copy_classnames, imagenet_classes
from clipbench.errors import DataError


class ImageNetV2(CoopSpec):
    name = "imagenetv2"
    dirname = "imagenetv2"
    imagenet_classes = True
    image_root = "imagenetv2-matched-frequency-format-val"
    test_only = True
    expected = Counts(classes=1000, train=None, val=None, test=10_000)
    fix = (
        "Download imagenetv2-matched-frequency.tar.gz (ImageNetV2 release on Hugging Face, "
        "vaishaal/ImageNetV2) and extract it into imagenetv2/; see docs/datasets.md#imagenetv2."
    )
    sources = (
        Source(
            "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
            "imagenetv2-matched-frequency.tar.gz",
        ),
    )  # no checksum

    def finish_install(self, staged: Path) -> None:
        copy_classnames(staged)

    def read(self, data_root: Path) -> DatasetSplits:
        root = self.require_layout(data_root)
        wnids, names = imagenet_classes(root)
        folders = class_folders(self.images(data_root), self.fix)
        expected = [str(i) for i in range(len(wnids))]
        if sorted(folders, key=lambda f: (len(f), f)) != expected:
            raise DataError(
                f"{self.images(data_root)}: expected folders 0..999, found {len(folders)} folders "
                f"(e.g. {folders[:3]}). {self.fix}"
            )
        test = folder_records(self.images(data_root), expected, list(range(len(wnids))), names)
        return DatasetSplits((), (), test, wnids, names)
