"""FGVC-Aircraft (variant level) in the CoOp layout (spec §3.1, §3.3).

``fgvc_aircraft/`` is the ``data/`` folder of fgvc-aircraft-2013b: ``variants.txt`` (line order defines labels
0..99), ``images_variant_{train,val,test}.txt`` (lines ``<image id> <variant name>``) and ``images/<id>.jpg``.
There is no split JSON; the official train/val/test lists are used as they are.
"""

from __future__ import annotations

from pathlib import Path

from clipbench.data.base import DatasetSplits, Record
from clipbench.data.coop import CoopSpec, Counts, check_files, check_labels
from clipbench.data.download import Source
from clipbench.errors import DataError


class FGVCAircraft(CoopSpec):
    name = "fgvc_aircraft"
    dirname = "fgvc_aircraft"
    image_root = "images"
    required = ("variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")
    expected = Counts(classes=100, train=3_334, val=3_333, test=3_333)
    fix = (
        "Download fgvc-aircraft-2013b.tar.gz and place the contents of its data/ folder in fgvc_aircraft/; "
        "see docs/datasets.md#fgvc_aircraft."
    )
    sources = (
        Source(
            "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
            "fgvc-aircraft-2013b.tar.gz",
            member="fgvc-aircraft-2013b/data",
        ),
    )  # no published checksum

    def read(self, data_root: Path) -> DatasetSplits:
        root = self.require_layout(data_root)
        names = tuple(line.strip() for line in (root / "variants.txt").read_text().splitlines() if line.strip())
        if len(set(names)) != len(names):
            raise DataError(f"{root / 'variants.txt'}: a variant appears twice; re-extract the archive")
        splits = {s: self._split(root / f"images_variant_{s}.txt", names) for s in ("train", "val", "test")}
        for s, records in splits.items():
            check_labels(records, names, root / f"images_variant_{s}.txt", s)
        check_files(self.images(data_root), [r for rs in splits.values() for r in rs], root, self.fix)
        ids = tuple(f"{self.name}/{n}" for n in names)
        return DatasetSplits(splits["train"], splits["val"], splits["test"], ids, names)

    def _split(self, path: Path, names: tuple[str, ...]) -> tuple[Record, ...]:
        label = {n: i for i, n in enumerate(names)}
        out = []
        for i, line in enumerate(path.read_text().splitlines()):
            image, _, variant = line.strip().partition(" ")
            if not line.strip():
                continue
            if variant not in label:
                raise DataError(
                    f"{path}:{i + 1}: variant {variant!r} is not in variants.txt; the lists come from "
                    "different releases — re-extract fgvc-aircraft-2013b"
                )
            out.append(Record(f"{image}.jpg", label[variant], variant))
        if not out:
            raise DataError(f"{path} lists no images; re-extract fgvc-aircraft-2013b")
        return tuple(out)
