"""Oxford-IIIT Pets in the CoOp layout: ``oxford_pets/split_zhou_OxfordPets.json``
over ``oxford_pets/images`` (spec §3.1).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec


class OxfordPets(SplitJsonSpec):
    name = "oxford_pets"
    dirname = "oxford_pets"
    image_root = "images"
    split_file = "split_zhou_OxfordPets.json"
    expected = Counts(classes=37, train=2_944, val=736, test=3_669)
    fix = ("Extract images.tar.gz and annotations.tar.gz into oxford_pets/ and put split_zhou_OxfordPets.json there; "
           "see docs/datasets.md#oxford_pets.")
