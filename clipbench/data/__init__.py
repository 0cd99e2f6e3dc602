"""Dataset registry: one line per dataset (key -> ``module:Class``).

Adding a dataset: create ``clipbench/data/datasets/<key>.py`` with a :class:`~clipbench.data.base.DatasetSpec`
subclass that reads its raw layout, add its class names / templates under ``metadata/``, and add one line here.
"""

from __future__ import annotations

from clipbench.data.base import DatasetSpec, DatasetSplits, LabelSpace, Record
from clipbench.registry import Registry

DATASETS: Registry[type[DatasetSpec]] = Registry("dataset", {
    "toy_objects": "clipbench.data.datasets.toy:ToyObjects",
    "toy_textures": "clipbench.data.datasets.toy:ToyTextures",
    "toy_scenes": "clipbench.data.datasets.toy:ToyScenes",
    "toy_objects_sketch": "clipbench.data.datasets.toy:ToyObjectsSketch",
    "toy_objects_noisy": "clipbench.data.datasets.toy:ToyObjectsNoisy",
    "toy_objects_textured": "clipbench.data.datasets.toy:ToyObjectsTextured",
    "toy_objects_pixelated": "clipbench.data.datasets.toy:ToyObjectsPixelated",
}, base=DatasetSpec)


def get_dataset(name: str) -> DatasetSpec:
    """An instance of the registered dataset spec ``name``."""
    return DATASETS.get(name)()


__all__ = ["DATASETS", "DatasetSpec", "DatasetSplits", "LabelSpace", "Record", "get_dataset"]
