"""Checks of every listed image before any compute: containment, duplicates, presence and file structure.

The download stage runs :func:`check_images` on each dataset it indexes, so a listed file that escapes the
data folder, is empty, is not an image or was cut short stops the pipeline at its first stage with the file
named, instead of failing hours later during extraction or being skipped silently.

Modes (``image_check`` in params.yaml):

* ``structure`` (default): the file resolves inside the dataset's image root (a symlink pointing out of it is
  refused; a symlinked dataset *folder* is fine), is not empty, its header names a format Pillow can decode,
  and a JPEG or PNG file ends with its end marker (JPEG EOI ``FF D9``, PNG ``IEND`` chunk, allowing up to
  :data:`TAIL` bytes of trailing padding), which catches interrupted downloads. It reads a header and a
  1 KiB tail per image, in :data:`WORKERS` threads.
* ``decode``: additionally decode every image in full (as slow as decoding the dataset once). Use it when
  the end-marker rule is not enough, or when a dataset legitimately appends data after the end marker.
* ``off``: containment only.

Unless ``off``, the download stage also compares the bytes of every listed image (:func:`check_duplicates`): a test
image identical to a training or validation image is refused (``train_test_overlap: warn`` accepts it), an image
listed under two classes is reported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from clipbench.data.base import DatasetSplits, Record
from clipbench.data.images import too_large
from clipbench.errors import ClipbenchWarning, DataError
from clipbench.seal import file_sha256

IMAGE_CHECKS = ("structure", "decode", "off")
OVERLAP_MODES = ("refuse", "warn")
TAIL = 1024
WORKERS = 8
_SHOW = 5
_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
_END = {_JPEG: b"\xff\xd9", _PNG: b"IEND"}


def check_images(image_root: Path, records: Iterable[Record], mode: str = "structure", fix: str = "") -> int:
    """Check each record's image under ``image_root``; raise one :class:`DataError` listing the bad files.

    Returns the number of images checked.
    """
    if mode not in IMAGE_CHECKS:
        raise ValueError(f"image_check must be one of {IMAGE_CHECKS}, got {mode!r}")
    paths = sorted({r.path for r in records})
    root = os.path.realpath(image_root)
    problems = [p for p in (_contained(root, image_root, rel) for rel in paths) if p]
    if problems:
        _raise(
            image_root,
            problems,
            "escape the dataset folder",
            "copy the files into the dataset folder or symlink the whole dataset folder instead",
        )
    if mode != "off":
        with ThreadPoolExecutor(WORKERS) as pool:
            found = pool.map(lambda rel: _structure(image_root / rel, mode == "decode"), paths, chunksize=64)
            problems = [p for p in found if p]
        if problems:
            _raise(
                image_root,
                problems,
                "are unreadable",
                f"replace these files (re-download or re-extract the dataset). {fix}".strip(),
            )
    return len(paths)


def _raise(image_root: Path, problems: list[str], what: str, action: str) -> None:
    shown = "; ".join(problems[:_SHOW]) + ("; ..." if len(problems) > _SHOW else "")
    raise DataError(f"{len(problems)} listed images under {image_root} {what}: {shown}. Fix: {action}")


def _contained(real_root: str, image_root: Path, rel: str) -> str | None:
    real = os.path.realpath(image_root / rel)
    if real == real_root or not real.startswith(real_root + os.sep):
        return f"{image_root / rel} resolves to {real}"
    return None


def _structure(path: Path, decode: bool) -> str | None:
    """``None`` if ``path`` looks like a complete image, else ``"<path>: <reason>"``."""
    try:
        size = path.stat().st_size
        if size == 0:
            return f"{path}: empty file (0 bytes)"
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(max(0, size - TAIL))
            tail = fh.read()
        with Image.open(path) as img:
            refused = too_large(img)
            if refused:
                return f"{path}: {refused}"
            if decode:
                img.load()
    except FileNotFoundError:
        return f"{path}: missing"
    except Image.DecompressionBombError:
        return f"{path}: {too_large(None)}"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{path}: not a decodable image ({exc})"
    return _truncation(path, head, tail)


def _truncation(path: Path, head: bytes, tail: bytes) -> str | None:
    for magic, end in _END.items():
        if head.startswith(magic) and end not in tail:
            kind = "JPEG" if magic == _JPEG else "PNG"
            return f"{path}: truncated ({kind} end marker missing)"
    return None


@dataclass(frozen=True)
class Duplicates:
    """Images with identical bytes: ``leaks`` pair a test image with a train/val image, ``across_classes`` pair
    images of two different classes (``"split[i] path"`` strings, a few of each are kept for messages)."""

    leaks: tuple[tuple[str, str], ...]
    across_classes: tuple[tuple[str, str], ...]

    def summary(self) -> str:
        parts = []
        if self.leaks:
            a, b = self.leaks[0]
            parts.append(f"{len(self.leaks)} test images are byte-identical to train/val images (e.g. {b} = {a})")
        if self.across_classes:
            a, b = self.across_classes[0]
            parts.append(f"{len(self.across_classes)} images appear under two classes (e.g. {a} = {b})")
        return "; ".join(parts)


def content_duplicates(image_root: Path, splits: DatasetSplits) -> Duplicates:
    """Compare every listed image's bytes (sha256, in :data:`WORKERS` threads); paths are already unique."""
    records = [(name, r) for name in ("train", "val", "test") for r in getattr(splits, name)]
    with ThreadPoolExecutor(WORKERS) as pool:
        digests = list(pool.map(lambda item: file_sha256(image_root / item[1].path), records, chunksize=64))
    first: dict[str, tuple[str, Record]] = {}
    leaks, across = [], []
    for (split, r), digest in zip(records, digests, strict=True):
        if digest not in first:
            first[digest] = (split, r)
            continue
        split0, r0 = first[digest]
        pair = (f"{split0} {r0.path}", f"{split} {r.path}")
        if (split == "test") != (split0 == "test"):
            leaks.append(pair)
        if r.label != r0.label:
            across.append(pair)
    return Duplicates(tuple(leaks), tuple(across))


def check_duplicates(image_root: Path, splits: DatasetSplits, overlap: str, where: str) -> Duplicates:
    """Refuse test images that are byte-identical to training or validation images (``overlap="refuse"``), warn
    about the rest of :class:`Duplicates`; ``overlap="warn"`` (``train_test_overlap`` in params) only warns."""
    found = content_duplicates(image_root, splits)
    if found.leaks and overlap == "refuse":
        raise DataError(
            f"{where}: {found.summary()}, which leaks test labels into training; remove the copies from the "
            "dataset, or set `train_test_overlap: warn` in params.yaml to accept them (documented in docs/rules.md)"
        )
    if found.leaks or found.across_classes:
        warnings.warn(f"{where}: {found.summary()}", ClipbenchWarning, stacklevel=2)
    return found
