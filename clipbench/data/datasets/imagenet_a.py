"""ImageNet-A in the CoOp layout (spec §3.5, §5.4): ``imagenet-adversarial/imagenet-a/<wnid>/``, test only.

The 200 wnid folders, sorted, are labelled 0..199; ``class_ids`` are the wnids, so a 1000-way class-specific
classifier is restricted to these 200 classes by wnid, never by name (spec §8 item 11).
"""

from __future__ import annotations

from clipbench.data.coop import Counts
from clipbench.data.download import Source
from clipbench.data.imagenet_family import WnidFolderTarget


class ImageNetA(WnidFolderTarget):
    name = "imagenet_a"
    dirname = "imagenet-adversarial"
    image_root = "imagenet-a"
    subset = True
    expected = Counts(classes=200, train=None, val=None, test=7_500)
    fix = (
        "Download imagenet-a.tar (github.com/hendrycks/natural-adv-examples) and extract it into "
        "imagenet-adversarial/; see docs/datasets.md#imagenet_a."
    )
    # no checksum is published for this archive
    sources = (Source("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar", "imagenet-a.tar"),)
