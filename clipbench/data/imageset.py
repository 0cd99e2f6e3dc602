"""Few-shot image sets for methods that run the encoders (prompt learning, fine-tuning).

Each image is decoded once and kept as a uint8 array, so a method that trains for 100 epochs decodes each file
once, not 100 times. Augmentations draw from an explicit ``numpy`` generator, so a method's training is
reproducible from its seed alone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from clipbench.data.images import open_rgb

Transform = Callable[[Image.Image], torch.Tensor]
T = TypeVar("T")


@dataclass(frozen=True)
class ImageSet:
    """Labelled images: ``paths`` relative to ``root``; ``labels`` index the task's label space."""

    root: Path
    paths: tuple[str, ...]
    labels: torch.Tensor
    _decoded: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as RGB (decoded from disk on first use only)."""
        if i not in self._decoded:
            self._decoded[i] = np.asarray(open_rgb(Path(self.root) / self.paths[i]))
        return Image.fromarray(self._decoded[i])

    def load(self, i: int) -> Image.Image:
        """Image ``i`` decoded from disk without keeping it (what a data-loader worker does)."""
        return Image.fromarray(self._decoded[i]) if i in self._decoded else open_rgb(Path(self.root) / self.paths[i])

    def size(self, i: int) -> tuple[int, int]:
        """``(width, height)`` of image ``i`` (from the file header unless it is decoded already)."""
        if i in self._decoded:
            height, width = self._decoded[i].shape[:2]
            return width, height
        with Image.open(Path(self.root) / self.paths[i]) as img:
            return img.size

    @property
    def decoded(self) -> int:
        """How many distinct images were decoded so far."""
        return len(self._decoded)

    def pixels(self, indices: Sequence[int] | torch.Tensor, transform: Transform) -> torch.Tensor:
        """A ``[B, 3, H, W]`` batch of ``transform``-ed images."""
        return torch.stack([transform(self.image(int(i))) for i in indices])

    def batch(self, indices: Sequence[int] | torch.Tensor, transform: Transform) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels and labels of ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.pixels(idx, transform), self.labels[idx]


def prefetch(batches: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``batches`` in order while one background thread prepares up to ``depth`` of the next ones.

    Lets augmentation and pixel assembly of batch ``i + 1`` overlap the model step on batch ``i``. The producer
    consumes ``batches`` sequentially, so an augmentation generator drawn only inside it stays deterministic;
    do not draw from that generator in the loop body. An exception in the producer is re-raised here.
    """
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                if stop.is_set():
                    return
                slots.put((item, None))
            slots.put((done, None))
        except BaseException as exc:  # handed to the consumer
            slots.put((done, exc))

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item, exc = slots.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                worker.join(0.01)
