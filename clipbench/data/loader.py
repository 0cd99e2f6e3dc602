"""Decoding hidden behind encoding: image batches prepared by worker processes (``runtime.decode_workers``).

:func:`load_batches` yields ``make(0), make(1), ...`` in order. With ``workers > 0`` a torch ``DataLoader``
computes them in that many worker processes (prefetching ``prefetch`` items each, into pinned memory when the
consumer is a GPU), so JPEG decoding, resizing and augmentation run while the accelerator encodes the previous
batch. With ``workers = 0`` they are computed in the calling process (with ``overlap``, one background thread
prepares the next batch). Every item is a pure function of its index, so the results do not depend on the number
of workers (``tests/test_loader.py`` compares them byte for byte).

Extraction hands batches over as ``uint8`` pixels (4x less memory in flight and on the bus than fp32) and
normalises them on the encoding device with exactly torchvision's ``to_tensor`` + ``normalize`` arithmetic
(:func:`to_model_input`), so the numbers equal the all-fp32 host path bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from clipbench.data.images import ViewParams, apply_view, draw_view, to_normalised_tensor
from clipbench.data.imageset import ImageSet, prefetch

T = TypeVar("T")


@dataclass(frozen=True)
class _Items(torch.utils.data.Dataset):
    """A map-style dataset of ``make(i)`` for ``i < count`` (one item = one batch)."""

    make: Callable[[int], Any]
    count: int

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Any:
        try:
            return self.make(i)
        except Exception as exc:  # handed back whole: torch would re-raise it with a multi-line message
            return _Failed(exc)


@dataclass(frozen=True)
class _Failed:
    error: Exception


def _unwrapped(items: Iterator[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, _Failed):
            raise item.error
        yield item


def load_batches(
    make: Callable[[int], T], count: int, workers: int = 0, pin: bool = False, overlap: bool = False, prefetch_items=2
) -> Iterator[T]:
    """``make(i)`` for ``i`` in ``range(count)``, in order, computed by ``workers`` processes (0: here).

    ``pin``: page-locked host memory for asynchronous copies to a GPU. ``overlap`` (only with ``workers = 0``):
    a background thread prepares the next item while the caller works on the current one.
    """
    if workers <= 0 or count <= 1:
        items = (make(i) for i in range(count))
        return prefetch(items, depth=1) if overlap else items
    loader = torch.utils.data.DataLoader(
        _Items(make, count),
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, count),
        pin_memory=pin,
        prefetch_factor=prefetch_items,
        persistent_workers=False,
    )
    return _unwrapped(iter(loader))


# --- training batches of image-level methods ---------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """A training view: RandomResizedCrop(``size``, ``scale``, bicubic) [+ flip p=0.5] + normalisation.

    The Dassl training transform of CoOp/CoCoOp/ClipFit is ``scale=(0.08, 1)`` with flip (spec §2.3).
    """

    size: int
    scale: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True


@dataclass(frozen=True)
class _RenderBatches:
    """Batch ``j`` of a drawn plan: decode, crop, flip and normalise its images (``make`` of a loader)."""

    images: ImageSet
    plans: tuple[tuple[torch.Tensor, tuple[ViewParams, ...]], ...]
    augment: Augment
    cached: bool  # decode through the ImageSet's cache (in-process) or afresh per use (worker processes)

    def __call__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx, views = self.plans[j]
        decode, a = (self.images.image if self.cached else self.images.load), self.augment
        pixels = [
            to_normalised_tensor(apply_view(decode(int(i)), v, a.size), a.mean, a.std)
            for i, v in zip(idx, views, strict=True)
        ]
        return torch.stack(pixels), self.images.labels[idx]


def training_batches(
    images: ImageSet,
    batches: Sequence[torch.Tensor],
    augment: Augment,
    rng: np.random.Generator,
    workers: int = 0,
    pin: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented ``(pixels, labels)`` of each index batch of ``batches``, in order.

    Every crop box and flip is drawn here, before any batch is prepared, from ``rng`` image by image in batch
    order (the order of a sequential loop), so the pixels are the same for any number of ``workers``. Workers
    decode each image afresh (as Dassl's loader does) instead of keeping every decoded image in every worker;
    in-process, each image is decoded once and kept. With ``pin`` (a GPU consumer) and no workers, a background
    thread prepares the next batch during the training step.
    """
    plans = tuple(
        (idx, tuple(draw_view(*images.size(int(i)), augment.scale, rng, augment.flip) for i in idx)) for idx in batches
    )
    make = _RenderBatches(images, plans, augment, cached=workers <= 0)
    return load_batches(make, len(plans), workers, pin=pin, overlap=pin)


def pixel_stats(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation mean and std of the model's image tower (OpenAI's when the config sets none)."""
    import open_clip

    visual = model.visual
    return (
        tuple(visual.image_mean or open_clip.OPENAI_DATASET_MEAN),
        tuple(visual.image_std or open_clip.OPENAI_DATASET_STD),
    )


# --- uint8 hand-over --------------------------------------------------------------------------------------------


def pil_stage(preprocess: Any) -> tuple[Callable[[Image.Image], Image.Image], Sequence[float], Sequence[float]] | None:
    """Split an open_clip eval transform into its PIL part and the normalisation (``None``: another shape).

    open_clip's eval transform is ``Compose([Resize, CenterCrop, (MaybeConvertMode|_convert_to_rgb),
    (MaybeToTensor|ToTensor), Normalize])``; everything before the tensor conversion works on PIL images.
    """
    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 2 or type(steps[-1]).__name__ != "Normalize":
        return None
    if type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor"):
        return None
    head = steps[:-2]

    def apply(img: Image.Image) -> Image.Image:
        for step in head:
            img = step(img)
        return img

    return apply, tuple(steps[-1].mean), tuple(steps[-1].std)


def to_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a ``[3, H, W]`` uint8 tensor (``to_tensor`` without the division)."""
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def to_model_input(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` pixels on ``device`` as normalised fp32, with torchvision's exact arithmetic.

    ``to_tensor`` divides by 255 in fp32; ``normalize`` subtracts the mean and divides by the std as fp32
    tensors. Both are elementwise IEEE operations, so the result equals the host path bit for bit on any device.
    """
    x = pixels.to(device, non_blocking=pixels.is_pinned()).to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device)[:, None, None]
    return x.sub_(m).div_(s)
