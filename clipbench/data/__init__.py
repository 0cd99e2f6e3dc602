"""Dataset registry: one line per dataset (key -> ``module:Class``).

Adding a dataset: create ``clipbench/data/datasets/<key>.py`` with a :class:`~clipbench.data.base.DatasetSpec`
subclass that reads its raw layout, add its class names / templates under ``metadata/``, and add one line here.
"""

from __future__ import annotations

from clipbench.data.base import DatasetSpec, DatasetSplits, LabelSpace, Record
from clipbench.registry import Registry

DATASETS: Registry[type[DatasetSpec]] = Registry(
    "dataset",
    {
        "imagenet": "clipbench.data.datasets.imagenet:ImageNet",
        "caltech101": "clipbench.data.datasets.caltech101:Caltech101",
        "oxford_pets": "clipbench.data.datasets.oxford_pets:OxfordPets",
        "stanford_cars": "clipbench.data.datasets.stanford_cars:StanfordCars",
        "oxford_flowers": "clipbench.data.datasets.oxford_flowers:OxfordFlowers",
        "food101": "clipbench.data.datasets.food101:Food101",
        "fgvc_aircraft": "clipbench.data.datasets.fgvc_aircraft:FGVCAircraft",
        "sun397": "clipbench.data.datasets.sun397:SUN397",
        "dtd": "clipbench.data.datasets.dtd:DTD",
        "eurosat": "clipbench.data.datasets.eurosat:EuroSAT",
        "ucf101": "clipbench.data.datasets.ucf101:UCF101",
        "imagenetv2": "clipbench.data.datasets.imagenetv2:ImageNetV2",
        "imagenet_sketch": "clipbench.data.datasets.imagenet_sketch:ImageNetSketch",
        "imagenet_a": "clipbench.data.datasets.imagenet_a:ImageNetA",
        "imagenet_r": "clipbench.data.datasets.imagenet_r:ImageNetR",
        "toy_objects": "clipbench.data.datasets.toy:ToyObjects",
        "toy_textures": "clipbench.data.datasets.toy:ToyTextures",
        "toy_scenes": "clipbench.data.datasets.toy:ToyScenes",
        "toy_objects_sketch": "clipbench.data.datasets.toy:ToyObjectsSketch",
        "toy_objects_noisy": "clipbench.data.datasets.toy:ToyObjectsNoisy",
        "toy_objects_textured": "clipbench.data.datasets.toy:ToyObjectsTextured",
        "toy_objects_pixelated": "clipbench.data.datasets.toy:ToyObjectsPixelated",
    },
    base=DatasetSpec,
)


def get_dataset(name: str) -> DatasetSpec:
    """An instance of the registered dataset spec ``name``."""
    return DATASETS.get(name)()


def imagenet_family_datasets() -> tuple[str, ...]:
    """Registered datasets labelled by ImageNet wnids: ImageNet and its variants (the one list of them)."""
    return tuple(n for n in DATASETS.names() if DATASETS.get(n).imagenet_classes)


__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetSplits",
    "LabelSpace",
    "Record",
    "get_dataset",
    "imagenet_family_datasets",
]
