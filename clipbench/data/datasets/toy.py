"""The embedded toy datasets (generated offline; see :mod:`clipbench.data.toy.suite`).

Each toy dataset is written in the CoOp layout that the real datasets use: ``<name>/images/<class_id>/*.png``,
a ``split_zhou_<name>.json`` file of ``[relative_path, label, classname]`` triples and a ``classnames.txt``
of ``<class_id> <class name>`` lines, so the toy suite exercises the same readers as the benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from PIL import Image

from clipbench.data.base import COMPLETE_MARKER, DatasetSpec, DatasetSplits, classes_from_records, read_split_json
from clipbench.data.toy.suite import TOY_DATASETS, ToyDataset, dataset_images
from clipbench.errors import DataError
from clipbench.io import atomic_directory, atomic_write_json


class ToyDatasetSpec(DatasetSpec):
    """A generated toy dataset; subclasses only name their definition."""

    toy: ClassVar[str]
    image_root = "images"
    generated: ClassVar[bool] = True  # regenerated whenever the download stage runs

    @property
    def definition(self) -> ToyDataset:
        return TOY_DATASETS[self.toy]

    @property
    def split_file(self) -> str:
        return f"split_zhou_{self.name}.json"

    def read(self, data_root: Path) -> DatasetSplits:
        root = self.root(data_root)
        if not self.is_ready(data_root):
            raise DataError(f"{self.name}: {root} is missing or incomplete; run `dvc repro download@{self.name}`")
        required = tuple(s for s, n in zip(("train", "val", "test"), self.definition.per_class, strict=True) if n)
        splits = read_split_json(root / self.split_file, require=required)
        ids, names = _read_classnames(root / "classnames.txt")
        source = splits["test"] if self.test_only else splits["train"]
        if classes_from_records(source, root / self.split_file) != names[: len(set(r.label for r in source))]:
            raise DataError(f"{root / self.split_file}: class names disagree with {root / 'classnames.txt'}")
        return DatasetSplits(splits["train"], splits["val"], splits["test"], ids, names)

    def prepare(self, data_root: Path) -> None:
        """Render every image and write the split file; the folder appears only when complete."""
        defn = self.definition
        with atomic_directory(self.root(data_root)) as tmp:
            split_json: dict[str, list] = {"train": [], "val": [], "test": []}
            for split in split_json:
                for label, index, pixels in dataset_images(defn, split):
                    cls = defn.classes[label]
                    rel = f"{cls.class_id}/{split}_{index:04d}.png"
                    path = tmp / self.image_root / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(path, optimize=False, compress_level=1)
                    split_json[split].append([rel, label, cls.classname.replace(" ", "_")])
            atomic_write_json(tmp / self.split_file, split_json)
            (tmp / "classnames.txt").write_text("".join(f"{c.class_id} {c.classname}\n" for c in defn.classes))
            (tmp / COMPLETE_MARKER).write_text("generated\n")


def _read_classnames(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not path.is_file():
        raise DataError(f"{path} is missing; regenerate the dataset with `dvc repro download`")
    ids, names = [], []
    for i, line in enumerate(path.read_text().splitlines()):
        cid, _, name = line.partition(" ")
        if not cid or not name:
            raise DataError(f"{path}:{i + 1}: expected '<class_id> <class name>', got {line!r}")
        ids.append(cid)
        names.append(name.replace(" ", "_"))
    return tuple(ids), tuple(names)


def _toy(name: str) -> type[ToyDatasetSpec]:
    """The spec class of toy dataset ``name`` (test-only when its definition has no training images)."""
    attrs = {"name": name, "dirname": name, "toy": name, "test_only": TOY_DATASETS[name].per_class[0] == 0}
    return type("".join(part.title() for part in name.split("_")), (ToyDatasetSpec,), attrs)


ToyObjects = _toy("toy_objects")
ToyTextures = _toy("toy_textures")
ToyScenes = _toy("toy_scenes")
ToyObjectsSketch = _toy("toy_objects_sketch")
ToyObjectsNoisy = _toy("toy_objects_noisy")
ToyObjectsTextured = _toy("toy_objects_textured")
ToyObjectsPixelated = _toy("toy_objects_pixelated")
