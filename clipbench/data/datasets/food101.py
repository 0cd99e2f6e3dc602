"""Food-101 in the CoOp layout: ``food-101/split_zhou_Food101.json`` over ``food-101/images`` (spec §3.1).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec
from clipbench.data.download import Source, drive


class Food101(SplitJsonSpec):
    name = "food101"
    dirname = "food-101"
    image_root = "images"
    split_file = "split_zhou_Food101.json"
    expected = Counts(classes=101, train=50_500, val=20_200, test=30_300)
    fix = (
        "Extract food-101.tar.gz so that food-101/images/<class>/ exists and put split_zhou_Food101.json in "
        "food-101/; "
        "see docs/datasets.md#food101."
    )
    sources = (
        Source(
            "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
            "food-101.tar.gz",
            md5="85eeb15f3717b99a5da872d97d918f87",
            member="food-101",
        ),
        drive("1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl", "split_zhou_Food101.json"),
    )
