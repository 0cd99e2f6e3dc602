"""Shared readers for the CoOp data layout (methods-and-protocols.md §3).

A CoOp data folder is used unchanged: ``<data_root>/<dataset dir>/`` holds the dataset's image root and
either a ``split_zhou_*.json`` file (most datasets), the official FGVC-Aircraft variant lists, or class
folders (the ImageNet family). Every reader validates structure (files present, labels consistent, every
class in every split) and raises :class:`DataError` naming the file and the fix. Image counts are compared
with the published sizes (§3.1, §3.5) by :func:`check_counts`; ``counts="classes"`` relaxes this to the class
count for subsets and test fixtures.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from clipbench.data.base import (
    COMPLETE_MARKER,
    DatasetSpec,
    DatasetSplits,
    Record,
    classes_from_records,
    read_split_json,
    read_utf8,
)
from clipbench.data.download import Source
from clipbench.errors import ClipbenchWarning, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IGNORED_FILES = frozenset({"Thumbs.db", "README.txt", "README.md", "LICENSE", "LICENSE.txt"})
COUNT_MODES = ("exact", "classes")
_SHOW = 5  # examples listed in an error message


@dataclass(frozen=True)
class Counts:
    """Published split sizes; ``val=None`` for datasets without a validation split."""

    classes: int
    train: int | None
    val: int | None
    test: int


class CoopSpec(DatasetSpec):
    """A real dataset in the CoOp layout: subclasses set ``expected`` and ``fix`` (how to obtain the data)."""

    expected: ClassVar[Counts]
    fix: ClassVar[str] = "see docs/datasets.md"
    required: ClassVar[tuple[str, ...]] = ()  # files/folders (relative to the dataset dir) that must exist
    sources: ClassVar[tuple[Source, ...]] = ()  # public files for automatic download (empty: manual steps)

    def finish_install(self, staged: Path) -> None:
        """Hook after the sources are placed in the staging folder ``staged`` (default: nothing)."""

    def missing(self, data_root: Path) -> list[str]:
        """Required files or folders that are absent (empty when the layout is present)."""
        root = self.root(data_root)
        need = (*self.required, self.image_root) if self.image_root else self.required
        return [str(root / rel) for rel in need if not (root / rel).exists()]

    def is_ready(self, data_root: Path) -> bool:
        """Downloaded by clipbench (marker) or placed by hand (the required files exist)."""
        return (self.root(data_root) / COMPLETE_MARKER).exists() or not self.missing(data_root)

    def prepare(self, data_root: Path) -> None:
        """Without public sources: explain exactly what to place where (see :mod:`clipbench.data.download`)."""
        missing = self.missing(data_root)
        raise DataError(
            f"{self.name} is not at {self.root(data_root)} (missing {', '.join(missing[:_SHOW])}) "
            f"and cannot be downloaded automatically. {self.fix}"
        )

    def require_layout(self, data_root: Path) -> Path:
        """The dataset folder, or a :class:`DataError` listing what is missing and how to get it."""
        missing = self.missing(data_root)
        if missing:
            raise DataError(f"{self.name}: missing {', '.join(missing[:_SHOW])}. {self.fix}")
        return self.root(data_root)


class SplitJsonSpec(CoopSpec):
    """A dataset described by a CoOp ``split_zhou_*.json`` file (paths relative to ``image_root``)."""

    split_file: ClassVar[str]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "split_file" in cls.__dict__:
            cls.required = (cls.split_file,)

    def read(self, data_root: Path) -> DatasetSplits:
        root = self.require_layout(data_root)
        source = root / self.split_file
        splits = read_split_json(source)
        names = classes_from_records(splits["train"], source)
        for split in ("val", "test"):
            check_labels(splits[split], names, source, split)
        check_files(self.images(data_root), [*splits["train"], *splits["val"], *splits["test"]], source, self.fix)
        ids = tuple(f"{self.name}/{n}" for n in names)
        if len(set(ids)) != len(ids):
            raise DataError(f"{source}: two labels share a class name; the split file is corrupted. {self.fix}")
        return DatasetSplits(splits["train"], splits["val"], splits["test"], ids, names)


def check_labels(records: tuple[Record, ...], names: tuple[str, ...], source: Path, split: str) -> None:
    """Every label is a training class with the same name, and every class appears in ``split``."""
    for i, r in enumerate(records):
        if not 0 <= r.label < len(names) or names[r.label] != r.classname:
            raise DataError(
                f"{source}: {split}[{i}] has label {r.label} ({r.classname!r}), which the train list "
                f"does not define that way; the split file is inconsistent — re-download it"
            )
    absent = sorted(set(range(len(names))) - {r.label for r in records})
    if absent:
        raise DataError(
            f"{source}: the {split!r} split has no image of {len(absent)} classes "
            f"(e.g. {names[absent[0]]!r}); the split file is truncated — re-download it"
        )


def check_files(image_root: Path, records: list[Record], source: Path, fix: str) -> None:
    """Every record's image exists under ``image_root`` (lists a few missing ones)."""
    listed: dict[Path, set[str]] = {}
    missing = []
    for r in records:
        folder, name = os.path.split(r.path)
        if folder not in listed:
            d = image_root / folder
            listed[folder] = set(os.listdir(d)) if d.is_dir() else set()
        if name not in listed[folder]:
            missing.append(r.path)
    if missing:
        raise DataError(
            f"{source} lists {len(missing)} images missing under {image_root} "
            f"(e.g. {', '.join(missing[:_SHOW])}); the archive is incomplete or extracted elsewhere. "
            f"{fix}"
        )


def class_folders(directory: Path, fix: str) -> list[str]:
    """Sorted sub-folder names of ``directory`` (stray files such as README.txt are ignored)."""
    if not directory.is_dir():
        raise DataError(f"{directory} is missing. {fix}")
    return sorted(name for name, is_dir in _entries(directory) if is_dir)


def _entries(folder: Path) -> list[tuple[str, bool]]:
    """(name, is a folder) of every visible entry; an entry that cannot be resolved (a symlink loop) is an error."""
    out = []
    for e in os.scandir(folder):
        if e.name.startswith("."):
            continue
        try:
            out.append((e.name, e.is_dir()))
        except OSError as exc:
            raise DataError(
                f"{Path(folder) / e.name} cannot be resolved ({exc.strerror}); remove or fix this entry "
                "(a symlink loop or a broken mount)"
            ) from exc
    return out


def list_images(folder: Path) -> list[str]:
    """Image file names in ``folder``, sorted (CoOp uses unsorted ``os.listdir``; sorting makes it portable).

    Files of another format are skipped with one warning naming how many and an example."""
    files = [name for name, is_dir in _entries(folder) if not is_dir]
    images = sorted(n for n in files if n.lower().endswith(IMAGE_SUFFIXES))
    skipped = sorted(set(files) - set(images) - IGNORED_FILES)
    if skipped:
        warnings.warn(
            f"{folder}: {len(skipped)} files of an unsupported format skipped (e.g. {skipped[0]!r}); "
            f"supported: {', '.join(IMAGE_SUFFIXES)} (convert them to include them)",
            ClipbenchWarning,
            stacklevel=2,
        )
    return images


def folder_records(
    image_root: Path, folders: list[str], labels: list[int], names: tuple[str, ...], prefix: str = ""
) -> tuple[Record, ...]:
    """Records of every image in ``image_root/<prefix>/<folder>`` with the folder's label."""
    out = []
    for folder, label in zip(folders, labels, strict=True):
        rel = f"{prefix}/{folder}" if prefix else folder
        images = list_images(image_root / rel)
        if not images:
            raise DataError(f"{image_root / rel} holds no images; the archive is incomplete — re-extract it")
        out += [Record(f"{rel}/{name}", label, names[label]) for name in images]
    return tuple(out)


def read_wnid_names(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``<wnid> <class name>`` lines (CoOp ``classnames.txt``) in file order."""
    if not path.is_file():
        raise DataError(f"{path} is missing; copy ImageNet's classnames.txt there (CoOp DATASETS.md)")
    ids, names = [], []
    for i, line in enumerate(read_utf8(path).splitlines()):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not wnid.startswith("n") or not name:
            raise DataError(f"{path}:{i + 1}: expected '<wnid> <class name>', got {line!r}")
        ids.append(wnid)
        names.append(name.strip())
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: a wnid appears twice; replace the file with ImageNet's classnames.txt")
    return tuple(ids), tuple(names)


def check_duplicates(splits: DatasetSplits, source: Path) -> None:
    """No image is listed twice, within a split or across splits (a training image in test leaks its label)."""
    seen: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for i, r in enumerate(getattr(splits, split)):
            if r.path in seen:
                raise DataError(
                    f"{source}: {r.path!r} is listed twice ({seen[r.path]} and {split}[{i}]); "
                    "the split file is corrupted — re-download it or remove the duplicate"
                )
            seen[r.path] = f"{split}[{i}]"


def check_counts(spec: DatasetSpec, splits: DatasetSplits, mode: str = "exact") -> list[str]:
    """Differences from the published sizes (``mode="classes"`` checks only the class count)."""
    if mode not in COUNT_MODES:
        raise ValueError(f"counts mode must be one of {COUNT_MODES}, got {mode!r}")
    expected: Counts | None = getattr(spec, "expected", None)
    if expected is None:
        return []
    found = {
        "classes": len(splits.class_ids),
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
    }
    keys = ("classes",) if mode == "classes" else ("classes", "train", "val", "test")
    return [
        f"{k}: expected {getattr(expected, k):,}, found {found[k]:,}"
        for k in keys
        if getattr(expected, k) is not None and getattr(expected, k) != found[k]
    ]


def validate(spec: DatasetSpec, data_root: Path, counts: str = "exact") -> DatasetSplits:
    """Read ``spec`` and compare with the published sizes; a mismatch raises with the fix."""
    splits = spec.read(data_root)
    check_duplicates(splits, spec.root(data_root) / getattr(spec, "split_file", ""))
    problems = check_counts(spec, splits, counts)
    if problems:
        raise DataError(
            f"{spec.name} at {spec.root(data_root)} does not match the published CoOp split "
            f"({'; '.join(problems)}). It is incomplete or a different version: {getattr(spec, 'fix', '')} "
            "(for a deliberate subset set `data_counts: classes` in params.yaml)"
        )
    return splits
