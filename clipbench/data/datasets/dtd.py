"""DTD in the CoOp layout: ``dtd/split_zhou_DescribableTextures.json`` over ``dtd/images`` (spec §3.1).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec


class DTD(SplitJsonSpec):
    name = "dtd"
    dirname = "dtd"
    image_root = "images"
    split_file = "split_zhou_DescribableTextures.json"
    expected = Counts(classes=47, train=2_820, val=1_128, test=1_692)
    fix = ("Extract dtd-r1.0.1.tar.gz so that dtd/images/<texture>/ exists and put "
           "split_zhou_DescribableTextures.json in dtd/; "
           "see docs/datasets.md#dtd.")
