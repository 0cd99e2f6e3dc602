"""ImageNet-1k in the CoOp layout: ``imagenet/images/{train,val}/<wnid>/`` and ``imagenet/classnames.txt``.

Labels follow sorted wnids (0..999). As in CoOp, the official validation images are the test split. CoOp has
no validation split for ImageNet (its ``val`` object is the test set, spec §8 item 13); clipbench leaves
``val`` empty and the K-shot sampler draws the ``min(K, 4)``-per-class validation images from the training
images not chosen as shots (:func:`clipbench.data.kshot.make_kshot`), so no selection ever sees test images.
"""

from __future__ import annotations

import os
from pathlib import Path

from clipbench.data.base import DatasetSplits
from clipbench.data.coop import IMAGE_SUFFIXES, CoopSpec, Counts, class_folders, folder_records
from clipbench.data.imagenet_family import imagenet_classes
from clipbench.errors import DataError

_VALPREP = (
    "sort the 50,000 validation images into one folder per wnid (for example with the valprep.sh "
    "script of the PyTorch ImageNet example), as CoOp DATASETS.md asks"
)


class ImageNet(CoopSpec):
    name = "imagenet"
    dirname = "imagenet"
    imagenet_classes = True
    image_root = "images"
    required = ("images/train", "images/val")
    expected = Counts(classes=1000, train=1_281_167, val=None, test=50_000)
    fix = (
        "ImageNet is gated: download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org "
        "(after accepting its terms), extract them to imagenet/images/train/<wnid>/ and "
        f"imagenet/images/val/<wnid>/, {_VALPREP}; see docs/datasets.md#imagenet."
    )

    def read(self, data_root: Path) -> DatasetSplits:
        root = self.require_layout(data_root)
        images = self.images(data_root)
        wnids, names = imagenet_classes(root)
        loose = [e.name for e in os.scandir(images / "val") if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)]
        if loose:
            raise DataError(
                f"{images / 'val'} holds {len(loose)} images outside wnid folders (e.g. {loose[0]}): {_VALPREP}."
            )
        labels = list(range(len(wnids)))
        for split in ("train", "val"):
            folders = class_folders(images / split, self.fix)
            if folders != list(wnids):
                lost = sorted(set(wnids) - set(folders))
                extra = sorted(set(folders) - set(wnids))
                raise DataError(
                    f"{images / split}: expected the 1000 wnid folders of classnames.txt; "
                    f"missing {len(lost)} (e.g. {lost[:3]}), unexpected {extra[:3]}. {self.fix}"
                )
        train = folder_records(images, list(wnids), labels, names, prefix="train")
        test = folder_records(images, list(wnids), labels, names, prefix="val")
        return DatasetSplits(train, (), test, wnids, names)
