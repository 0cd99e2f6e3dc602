"""Image decoding and the augmentations used for cached views.

Every augmented view is a pure function of (image path, view index, base seed, stream): adding images to the pool
or reordering it never changes an existing view, which keeps cached features valid as splits grow. A method's
:class:`ViewRecipe` names how its views are drawn; its stream makes each recipe (and, when seeded, each run seed)
draw its own views.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from clipbench.errors import DataError

if TYPE_CHECKING:
    import torch


def _tf() -> ModuleType:
    """torchvision's functional transforms, imported on first use (``import torchvision`` costs seconds)."""
    import torchvision.transforms.functional as TF

    return TF


DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own warning threshold (~ 9,459 x 9,459); `max_image_pixels` in params
_limit = {"pixels": DEFAULT_MAX_PIXELS}


def set_max_pixels(pixels: int) -> None:
    """Refuse images with more than ``pixels`` pixels (decompression bombs) before decoding them."""
    _limit["pixels"] = pixels
    Image.MAX_IMAGE_PIXELS = pixels  # Pillow itself refuses at twice this; clipbench at once this


def too_large(img: Image.Image | None) -> str | None:
    """Why ``img`` (opened, not decoded; ``None``: Pillow refused to open it as a bomb) may not be decoded."""
    if img is None or img.width * img.height > _limit["pixels"]:
        size = "its size" if img is None else f"{img.width} x {img.height} pixels"
        return (
            f"{size} exceeds the decompression-bomb limit of {_limit['pixels']:,} pixels "
            "(`max_image_pixels` in params.yaml)"
        )
    return None


def open_rgb(path: Path) -> Image.Image:
    """Decode ``path`` to an RGB PIL image (grey, palette, RGBA, CMYK and 16-bit inputs are converted)."""
    try:
        with Image.open(path) as img:
            refused = too_large(img)
            if refused:
                raise DataError(f"image {path}: {refused}; replace the file or raise the limit")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
            return img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(f"image {path} is missing; re-download the dataset or fix its split file") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {path}: {too_large(None)}; replace the file or raise the limit") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"image {path} is corrupt or not an image ({exc}); replace the file") from exc


def view_rng(path: str, view: int, seed: int, stream: tuple[int, ...] = ()) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(path.encode()), view, *stream])


@dataclass(frozen=True)
class ViewRecipe:
    """How a method's augmented training views are drawn (its reference's training transform).

    RandomResizedCrop(``scale``, ratio 3/4-4/3, bicubic) to the model's input size, then a horizontal flip with
    probability 1/2 when ``flip``. ``seeded``: every run seed draws views of its own, as each reference run's data
    loader does; otherwise all seeds read the same views. Methods whose recipes are equal share cached views.
    """

    scale: tuple[float, float]
    flip: bool = True
    seeded: bool = True
    interpolation: str = "bicubic"  # the only one clipbench draws (every reference uses it)

    @property
    def key(self) -> str:
        """A readable name, unique per recipe (the feature cache's tensor names use it)."""
        lo, hi = self.scale
        flip, seeded = "-flip" if self.flip else "", "" if self.seeded else "-unseeded"
        return f"rrc{lo:g}-{hi:g}{flip}-{self.interpolation}{seeded}"

    def stream(self, run_seed: int) -> tuple[int, int]:
        """The random stream of this recipe's views at ``run_seed`` (extra entropy of :func:`view_rng`)."""
        return zlib.crc32(self.key.encode()), run_seed if self.seeded else 0


def random_resized_crop_params(
    width: int,
    height: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop parameter rule (10 tries, then a central crop), drawn from ``rng``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class ViewParams:
    """One RandomResizedCrop box (top, left, height, width) and whether the crop is flipped."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def draw_view(
    width: int, height: int, scale: tuple[float, float], rng: np.random.Generator, flip: bool = True
) -> ViewParams:
    """The crop box, then (if ``flip``) the flip coin, drawn from ``rng`` in that order."""
    box = random_resized_crop_params(width, height, scale, rng)
    return ViewParams(*box, flip=bool(flip and rng.uniform() < 0.5))


def apply_view(img: Image.Image, view: ViewParams, size: int) -> Image.Image:
    """The crop resized to ``size`` x ``size`` (bicubic), flipped if drawn so."""
    TF = _tf()
    out = TF.resized_crop(
        img, view.top, view.left, view.height, view.width, [size, size], interpolation=TF.InterpolationMode.BICUBIC
    )
    return TF.hflip(out) if view.flip else out


def augmented_view(
    img: Image.Image, size: int, scale: tuple[float, float], rng: np.random.Generator, flip: bool = True
) -> Image.Image:
    """RandomResizedCrop(size, scale, bicubic) then (if ``flip``) a horizontal flip with probability 0.5."""
    return apply_view(img, draw_view(img.width, img.height, scale, rng, flip), size)


def to_normalised_tensor(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    TF = _tf()
    return TF.normalize(TF.to_tensor(img), list(mean), list(std))
