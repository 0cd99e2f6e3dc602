"""ImageNet-R in the CoOp layout (spec §3.5, §5.4): ``imagenet-rendition/imagenet-r/<wnid>/``, test only.

The 200 wnid folders, sorted, are labelled 0..199; ``class_ids`` are the wnids (mapping by wnid, spec §8
item 11).
"""

from __future__ import annotations

from clipbench.data.coop import Counts
from clipbench.data.download import Source
from clipbench.data.imagenet_family import WnidFolderTarget


class ImageNetR(WnidFolderTarget):
    name = "imagenet_r"
    dirname = "imagenet-rendition"
    image_root = "imagenet-r"
    subset = True
    expected = Counts(classes=200, train=None, val=None, test=30_000)
    fix = (
        "Download imagenet-r.tar (github.com/hendrycks/imagenet-r) and extract it into imagenet-rendition/; "
        "see docs/datasets.md#imagenet_r."
    )
    # no checksum is published for this archive
    sources = (Source("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar", "imagenet-r.tar"),)
