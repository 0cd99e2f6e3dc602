"""Caltech101 in the CoOp layout: ``caltech-101/split_zhou_Caltech101.json``
over ``caltech-101/101_ObjectCategories`` (spec §3.1, §3.4).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec
from clipbench.data.download import Source, drive


class Caltech101(SplitJsonSpec):
    name = "caltech101"
    dirname = "caltech-101"
    image_root = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    expected = Counts(classes=100, train=4_128, val=1_649, test=2_465)
    fix = (
        "Extract 101_ObjectCategories.tar.gz into caltech-101/ and put split_zhou_Caltech101.json (CoOp "
        "DATASETS.md) next to it; "
        "see docs/datasets.md#caltech101."
    )
    sources = (
        Source(
            "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
            "caltech-101.zip",
            md5="3138e1922a9193bfa496528edbbc45d0",
            member="caltech-101",
            inner="101_ObjectCategories.tar.gz",
        ),
        drive("1hyarUivQE36mY6jSomru6Fjd-JzwcCzN", "split_zhou_Caltech101.json"),
    )
