"""UCF101 mid-frames in the CoOp layout: ``ucf101/split_zhou_UCF101.json``
over ``ucf101/UCF-101-midframes`` (spec §3.1, §3.4).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec
from clipbench.data.download import drive


class UCF101(SplitJsonSpec):
    name = "ucf101"
    dirname = "ucf101"
    image_root = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    expected = Counts(classes=101, train=7_639, val=1_898, test=3_783)
    fix = (
        "Extract CoOp's UCF-101-midframes.zip into ucf101/ and put split_zhou_UCF101.json there; "
        "see docs/datasets.md#ucf101."
    )
    sources = (
        drive("10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O", "UCF-101-midframes.zip", member=""),
        drive("1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y", "split_zhou_UCF101.json"),
    )
