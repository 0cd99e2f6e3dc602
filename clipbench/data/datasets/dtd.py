"""DTD in the CoOp layout: ``dtd/split_zhou_DescribableTextures.json`` over ``dtd/images`` (spec §3.1).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec
from clipbench.data.download import Source, drive


class DTD(SplitJsonSpec):
    name = "dtd"
    dirname = "dtd"
    image_root = "images"
    split_file = "split_zhou_DescribableTextures.json"
    expected = Counts(classes=47, train=2_820, val=1_128, test=1_692)
    fix = (
        "Extract dtd-r1.0.1.tar.gz so that dtd/images/<texture>/ exists and put "
        "split_zhou_DescribableTextures.json in dtd/; "
        "see docs/datasets.md#dtd."
    )
    sources = (
        Source(
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
            "dtd-r1.0.1.tar.gz",
            md5="fff73e5086ae6bdbea199a49dfb8a4c1",
            member="dtd",
        ),
        drive("1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x", "split_zhou_DescribableTextures.json"),
    )
