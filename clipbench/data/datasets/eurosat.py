"""EuroSAT in the CoOp layout: ``eurosat/split_zhou_EuroSAT.json`` over ``eurosat/2750`` (spec §3.1, §3.4).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec
from clipbench.data.download import Source, drive


class EuroSAT(SplitJsonSpec):
    name = "eurosat"
    dirname = "eurosat"
    image_root = "2750"
    split_file = "split_zhou_EuroSAT.json"
    expected = Counts(classes=10, train=13_500, val=5_400, test=8_100)
    fix = (
        "Extract EuroSAT.zip (RGB) into eurosat/ (giving eurosat/2750/<class>/) and put "
        "split_zhou_EuroSAT.json there; "
        "see docs/datasets.md#eurosat."
    )
    sources = (
        Source(
            "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/"
            "EuroSAT.zip",
            "EuroSAT.zip",
            md5="c8fa014336c82ac7804f0398fcb19387",
        ),
        drive("1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o", "split_zhou_EuroSAT.json"),
    )
