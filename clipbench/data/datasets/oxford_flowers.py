"""Flowers102 in the CoOp layout: ``oxford_flowers/split_zhou_OxfordFlowers.json``
over ``oxford_flowers/jpg`` (spec §3.1).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec


class OxfordFlowers(SplitJsonSpec):
    name = "oxford_flowers"
    dirname = "oxford_flowers"
    image_root = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    expected = Counts(classes=102, train=4_093, val=1_633, test=2_463)
    fix = ("Extract 102flowers.tgz (folder jpg/) into oxford_flowers/ with imagelabels.mat, cat_to_name.json and "
           "split_zhou_OxfordFlowers.json; "
           "see docs/datasets.md#oxford_flowers.")
