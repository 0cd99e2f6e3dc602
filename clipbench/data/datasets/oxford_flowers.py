"""Flowers102 in the CoOp layout: ``oxford_flowers/split_zhou_OxfordFlowers.json``
over ``oxford_flowers/jpg`` (spec §3.1).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec
from clipbench.data.download import Source, drive


class OxfordFlowers(SplitJsonSpec):
    name = "oxford_flowers"
    dirname = "oxford_flowers"
    image_root = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    expected = Counts(classes=102, train=4_093, val=1_633, test=2_463)
    fix = (
        "Extract 102flowers.tgz (folder jpg/) into oxford_flowers/ with imagelabels.mat, cat_to_name.json and "
        "split_zhou_OxfordFlowers.json; "
        "see docs/datasets.md#oxford_flowers."
    )
    sources = (
        Source(
            "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
            "102flowers.tgz",
            md5="52808999861908f626f3c1f4e79d11fa",
        ),
        Source(
            "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
            "imagelabels.mat",
            md5="e0620be6f572b9609742df49c70aed4d",
            member=None,
        ),
        drive("1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0", "cat_to_name.json"),
        drive("1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT", "split_zhou_OxfordFlowers.json"),
    )
