"""The embedded toy suite: which datasets exist, their classes, and how their images are drawn.

Three distinct source datasets (objects, textures, scenes) stand in for the 11 benchmark datasets, and four
renderings of ``toy_objects`` (sketch, noisy, textured, pixelated) stand in for the ImageNet variants.
Evaluation images use seeds disjoint from the pretraining images (see :data:`PRETRAIN_STREAM`).

Like the real datasets, the toy ones have odd class counts (25, 21, 15: base-to-new rounding matters),
unequal class sizes (:meth:`ToyDataset.count`), several prompt templates each (``templates.json``), a colour
cast per source dataset's camera (:attr:`ToyDataset.cast`: zero-shot loses what few-shot methods recover; the
domain targets are rendered without it), and one source without a validation split of its own
(``toy_scenes``, as ImageNet: its few-shot validation images come from train).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from clipbench.data.toy import world

PRETRAIN_STREAM = 1  # rng stream of pretraining images
EVAL_STREAM = 2  # rng stream of dataset images (never used for pretraining)
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ToyClass:
    class_id: str
    classname: str
    attrs: MappingProxyType  # scene attributes that define the class


@dataclass(frozen=True)
class ToyDataset:
    name: str
    classes: tuple[ToyClass, ...]
    per_class: tuple[int, int, int]  # images of the largest class in train, val, test (0: no such split)
    style: str = "photo"
    full_frame: bool = False
    smallest: float = 0.6  # the smallest class has this fraction of the largest one's images (unequal sizes)
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the dataset camera's colour cast (world.Scene.cast)

    def scene(self, cls: ToyClass, rng: np.random.Generator) -> world.Scene:
        scene = world.random_scene(rng, style=self.style, cast=self.cast, **cls.attrs)
        return (
            replace(scene, full_frame=True, style="noisy" if rng.uniform() < 0.5 else "photo")
            if self.full_frame
            else scene
        )

    def count(self, split: str, label: int) -> int:
        """Images of class ``label`` in ``split``: sizes step down from the largest class to ``smallest`` of it."""
        largest = self.per_class[_SPLITS.index(split)]
        return round(largest * (1 - (1 - self.smallest) * ((label * 3) % 5) / 4))

    def split_size(self, split: str) -> int:
        return sum(self.count(split, label) for label in range(len(self.classes)))


def _cls(class_id: str, classname: str, **attrs: object) -> ToyClass:
    return ToyClass(class_id, classname, MappingProxyType(attrs))


_OBJECT_COLOURS = ("red", "green", "blue", "yellow", "purple")
_OBJECT_SHAPES = ("circle", "square", "triangle", "cross", "ring")
_OBJECTS = tuple(_cls(f"{c}_{s}", f"{c} {s}", colour=c, shape=s) for c in _OBJECT_COLOURS for s in _OBJECT_SHAPES)
_TEXTURE_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "pink")
_TEXTURES = tuple(
    _cls(f"{c}_{p}", f"{c} {p}", colour=c, pattern=p)
    for p in ("striped", "dotted", "checkered")
    for c in _TEXTURE_COLOURS
)
_SCENE_SHAPES = ("circle", "square", "triangle", "cross", "ring")
_SCENE_BACKGROUNDS = ("white", "black", "blue")
_SCENES = tuple(
    _cls(f"{s}_on_{b}", f"{s} on a {b} background", shape=s, background=b)
    for b in _SCENE_BACKGROUNDS
    for s in _SCENE_SHAPES
)

TOY_DATASETS: dict[str, ToyDataset] = {
    d.name: d
    for d in (
        ToyDataset("toy_objects", _OBJECTS, (32, 8, 25), cast=(1.3, 0.75, 1.4)),
        ToyDataset("toy_textures", _TEXTURES, (32, 8, 25), full_frame=True, cast=(1.15, 1.0, 0.8)),
        # no val split: its few-shot validation images come from train, so its classes need more train images
        ToyDataset("toy_scenes", _SCENES, (40, 0, 25), cast=(0.6, 1.2, 1.3)),
        ToyDataset("toy_objects_sketch", _OBJECTS, (0, 0, 25), style="sketch"),
        ToyDataset("toy_objects_noisy", _OBJECTS, (0, 0, 25), style="noisy"),
        ToyDataset("toy_objects_textured", _OBJECTS, (0, 0, 25), style="textured"),
        ToyDataset("toy_objects_pixelated", _OBJECTS, (0, 0, 25), style="pixelated"),
    )
}


def image_rng(dataset: str, split: str, label: int, index: int) -> np.random.Generator:
    """The generator for one dataset image: a pure function of its identity, disjoint from pretraining."""
    return np.random.default_rng([EVAL_STREAM, zlib.crc32(dataset.encode()), _SPLITS.index(split), label, index])


def dataset_images(defn: ToyDataset, split: str):
    """Yield ``(class_index, image_index, uint8 image)`` for one split of a toy dataset."""
    for label, cls in enumerate(defn.classes):
        for i in range(defn.count(split, label)):
            rng = image_rng(defn.name, split, label, i)
            yield label, i, world.render(defn.scene(cls, rng), rng)


def pretraining_pairs(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` captioned pretraining images from the pretraining stream (``seed`` selects the sample)."""
    rng = np.random.default_rng([PRETRAIN_STREAM, seed])
    images = np.empty((n, world.SIZE, world.SIZE, 3), np.uint8)
    captions = []
    for i in range(n):
        scene = world.pretraining_scene(rng)
        images[i] = world.render(scene, rng)
        captions.append(world.caption(scene, rng))
    return images, captions
