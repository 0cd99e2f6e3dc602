"""Oxford-IIIT Pets in the CoOp layout: ``oxford_pets/split_zhou_OxfordPets.json``
over ``oxford_pets/images`` (spec §3.1).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec
from clipbench.data.download import Source, drive


class OxfordPets(SplitJsonSpec):
    name = "oxford_pets"
    dirname = "oxford_pets"
    image_root = "images"
    split_file = "split_zhou_OxfordPets.json"
    expected = Counts(classes=37, train=2_944, val=736, test=3_669)
    fix = (
        "Extract images.tar.gz and annotations.tar.gz into oxford_pets/ and put split_zhou_OxfordPets.json there; "
        "see docs/datasets.md#oxford_pets."
    )
    sources = (
        Source(
            "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
            "images.tar.gz",
            md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
        ),
        Source(
            "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
            "annotations.tar.gz",
            md5="95a8c909bbe2e81eed6a22bccdf3f68f",
        ),
        drive("1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs", "split_zhou_OxfordPets.json"),
    )
