"""ImageSet decode-once and prefetch (batch preparation overlapping the model step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipbench.data.imageset import ImageSet, prefetch
from clipbench.data.loader import Augment, training_batches


def _image_set(root, n: int = 5) -> ImageSet:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
        paths.append(f"{i}.png")
    return ImageSet(root, tuple(paths), torch.arange(n))


def _augmented_batches(images: ImageSet, seed: int):
    aug = Augment(16, (0.5, 1.0), (0.5,) * 3, (0.5,) * 3)
    batches = [torch.arange(start, min(start + 2, len(images))) for start in range(0, len(images), 2)]
    yield from training_batches(images, batches, aug, np.random.default_rng(seed))


def test_prefetch_yields_the_same_deterministic_batches(tmp_path):
    images = _image_set(tmp_path)
    direct = list(_augmented_batches(images, seed=3))
    fetched = list(prefetch(_augmented_batches(images, seed=3), depth=2))
    assert len(fetched) == len(direct) == 3
    for (px_a, y_a), (px_b, y_b) in zip(direct, fetched, strict=True):
        assert torch.equal(px_a, px_b) and torch.equal(y_a, y_b)


def test_prefetch_reraises_producer_errors_after_the_good_items():
    def broken():
        yield 1
        yield 2
        raise ValueError("bad image")

    seen = []
    with pytest.raises(ValueError, match="bad image"):
        for item in prefetch(broken(), depth=1):
            seen.append(item)
    assert seen == [1, 2]


def test_prefetch_can_be_abandoned_early():
    for item in prefetch(iter(range(1000)), depth=1):
        if item == 3:
            break
    assert item == 3


def test_an_image_is_decoded_once(tmp_path):
    images = _image_set(tmp_path)
    images.image(4)
    assert images.decoded == 1
    assert np.array_equal(np.asarray(images.image(4)), np.asarray(Image.open(tmp_path / "4.png").convert("RGB")))
