"""SUN397 in the CoOp layout: ``sun397/split_zhou_SUN397.json`` over ``sun397/SUN397`` (spec §3.1, §3.4).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec
from clipbench.data.download import Source, drive


class SUN397(SplitJsonSpec):
    name = "sun397"
    dirname = "sun397"
    image_root = "SUN397"
    split_file = "split_zhou_SUN397.json"
    expected = Counts(classes=397, train=15_880, val=3_970, test=19_850)
    fix = (
        "Extract SUN397.tar.gz into sun397/ (giving sun397/SUN397/a/...) and put split_zhou_SUN397.json in sun397/; "
        "see docs/datasets.md#sun397."
    )
    sources = (
        Source(
            "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
            "SUN397.tar.gz",
            md5="8ca2778205c41d23104230ba66911c7a",
        ),
        drive("1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq", "split_zhou_SUN397.json"),
    )
