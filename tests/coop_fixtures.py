"""Miniature copies of the 15 benchmark datasets in the exact CoOp layout, for tests (nothing is downloaded).

Every dataset gets all its real classes (names from ``tests/data/coop_classnames.json`` and the bundled
ImageNet list) and a few tiny images per class and split: class ``i`` has ``2 + i % 3`` training images and
one validation and one test image, so per-class sizes differ and few-shot sampling has something to choose.
SUN397 uses real category paths for its first classes and ``x/scene_<i>`` placeholders for the rest.
ImageNet-A/R take every 5th wnid (offsets 0 and 1) as stand-ins for their 200-class subsets.
Images are one shared 4x4 PNG (the readers never decode them). Use :func:`write_coop_root`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from clipbench.data import metadata
from clipbench.data.coop import read_wnid_names

NAMES = json.loads((Path(__file__).parent / "data" / "coop_classnames.json").read_text())
SPLIT_FILES = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (120, 60, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


def unique_png(tag: str) -> bytes:
    """The same 4x4 image with ``tag`` in a text chunk: distinct bytes per file (the download stage refuses test
    images byte-identical to training images)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("id", tag)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (120, 60, 30)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def per_split(label: int) -> dict[str, int]:
    return {"train": 2 + label % 3, "val": 1, "test": 1}


def sun397_paths() -> list[str]:
    real = NAMES["sun397_paths"]
    return real + [f"x/scene_{i}" for i in range(len(real), 397)]


def sun397_name(path: str) -> str:
    """CoOp's SUN397 name: drop the letter folder, reverse the rest, join by space (spec §3.4)."""
    return " ".join(reversed(path.split("/")[1:]))


def classnames(dataset: str) -> list[str]:
    return [sun397_name(p) for p in sun397_paths()] if dataset == "sun397" else NAMES[dataset]


def _relpath(dataset: str, label: int, name: str, split: str, i: int, counter: list[int]) -> str:
    counter[0] += 1
    n = counter[0]
    if dataset == "oxford_pets":
        return f"{name.title()}_{n}.jpg"
    if dataset == "stanford_cars":
        return f"cars_{'test' if split == 'test' else 'train'}/{n:05d}.jpg"
    if dataset == "oxford_flowers":
        return f"image_{n:05d}.jpg"
    if dataset == "sun397":
        return f"{sun397_paths()[label]}/sun_{n:06d}.jpg"
    if dataset == "ucf101":
        return f"{name}/v_{name.replace('_', '')}_g{n:02d}_c01.jpg"
    return f"{name.replace(' ', '')}/{split}_{i:04d}.jpg"


def write_split_json_dataset(root: Path, dataset: str) -> None:
    dirname, image_root, split_file = SPLIT_FILES[dataset]
    base = root / dirname
    split_json: dict[str, list] = {"train": [], "val": [], "test": []}
    counter = [0]
    for label, name in enumerate(classnames(dataset)):
        for split, n in per_split(label).items():
            for i in range(n):
                rel = _relpath(dataset, label, name, split, i, counter)
                _image(base / image_root / rel)
                split_json[split].append([rel, label, name])
    (base / split_file).write_text(json.dumps(split_json))


def write_fgvc(root: Path) -> None:
    base = root / "fgvc_aircraft"
    (base / "images").mkdir(parents=True, exist_ok=True)
    names = NAMES["fgvc_aircraft"]
    (base / "variants.txt").write_text("".join(f"{n}\n" for n in names))
    n = 1000000
    for split in ("train", "val", "test"):
        lines = []
        for label, name in enumerate(names):
            for _ in range(per_split(label)[split]):
                n += 1
                _image(base / "images" / f"{n}.jpg")
                lines.append(f"{n} {name}\n")
        (base / f"images_variant_{split}.txt").write_text("".join(lines))


def write_imagenet_family(root: Path) -> None:
    wnids, _ = read_wnid_names(metadata.IMAGENET_CLASSNAMES)
    classnames_txt = metadata.IMAGENET_CLASSNAMES.read_text()
    for label, wnid in enumerate(wnids):
        for split in ("train", "val"):
            count = per_split(label)["train"] if split == "train" else 1
            for i in range(count):
                _image(root / "imagenet" / "images" / split / wnid / f"{wnid}_{split}_{i}.JPEG")
        _image(root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(label) / "0.jpeg")
        _image(root / "imagenet-sketch" / "images" / wnid / "sketch_0.JPEG")
        if label % 5 == 0:
            _image(root / "imagenet-adversarial" / "imagenet-a" / wnid / "a_0.jpg")
        if label % 5 == 1:
            _image(root / "imagenet-rendition" / "imagenet-r" / wnid / "art_0.jpg")
    for d in ("imagenet", "imagenetv2", "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition"):
        (root / d / "classnames.txt").write_text(classnames_txt)
    (root / "imagenet-adversarial" / "imagenet-a" / "README.txt").write_text("stray file, ignored\n")


def write_coop_root(root: Path) -> Path:
    """Write all 15 miniature datasets under ``root`` (a CoOp ``data_root``) and return it."""
    for dataset in SPLIT_FILES:
        write_split_json_dataset(root, dataset)
    write_fgvc(root)
    write_imagenet_family(root)
    return root


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(unique_png(str(path)))
