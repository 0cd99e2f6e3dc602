"""ImageNet-Sketch in the CoOp layout (spec §3.5): ``imagenet-sketch/images/<wnid>/``, test only, 1000 classes."""

from __future__ import annotations

from clipbench.data.coop import Counts
from clipbench.data.imagenet_family import WnidFolderTarget


class ImageNetSketch(WnidFolderTarget):
    name = "imagenet_sketch"
    dirname = "imagenet-sketch"
    image_root = "images"
    expected = Counts(classes=1000, train=None, val=None, test=50_889)
    fix = (
        "Download ImageNet-Sketch (ImageNet-Sketch.zip from the authors' Google Drive or the Hugging Face "
        "dataset songweig/imagenet_sketch) and extract it so that imagenet-sketch/images/<wnid>/ exists; "
        "see docs/datasets.md#imagenet_sketch."
    )
