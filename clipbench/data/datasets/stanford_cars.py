"""Stanford Cars in the CoOp layout: ``stanford_cars/split_zhou_StanfordCars.json``
over ``stanford_cars/.`` (spec §3.1).

Labels and class names come from the split file unchanged (CoOp's cleaned names).
"""

from __future__ import annotations

from clipbench.data.coop import Counts, SplitJsonSpec


class StanfordCars(SplitJsonSpec):
    name = "stanford_cars"
    dirname = "stanford_cars"
    image_root = ""
    split_file = "split_zhou_StanfordCars.json"
    expected = Counts(classes=196, train=6_509, val=1_635, test=8_041)
    fix = (
        "Place cars_train/, cars_test/ and devkit/ (the Stanford Cars release; its original site is offline, "
        "use a mirror) in stanford_cars/ and put split_zhou_StanfordCars.json there; "
        "see docs/datasets.md#stanford_cars."
    )
