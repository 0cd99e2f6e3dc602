"""Dataset specifications: how a dataset is laid out on disk and how its records are read.

A dataset spec knows only its raw layout. Class names and prompt templates are data (``metadata/*.json``);
few-shot sampling is shared (:mod:`clipbench.data.kshot`).
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from clipbench.errors import DataError
from clipbench.safeload import refuse_serialized_objects


@dataclass(frozen=True)
class Record:
    """One labelled image: ``path`` is relative to the dataset's image root."""

    path: str
    label: int
    classname: str


@dataclass(frozen=True)
class LabelSpace:
    """The classes a classifier chooses among, in label order.

    ``class_ids`` are stable identifiers (a WordNet id, a folder name) used to map class-specific weights
    between datasets; names are for prompts only and may repeat (ImageNet has duplicates).
    """

    dataset: str
    class_ids: tuple[str, ...]
    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.class_ids)

    def subset(self, labels: tuple[int, ...]) -> LabelSpace:
        """The space restricted to ``labels`` (in the given order, relabelled 0..len-1)."""
        return LabelSpace(
            self.dataset,
            tuple(self.class_ids[i] for i in labels),
            tuple(self.classnames[i] for i in labels),
            self.templates,
        )

    def prompts(self) -> list[list[str]]:
        """Per class, the prompt texts (underscores in class names become spaces)."""
        return [[t.format(name.replace("_", " ")) for t in self.templates] for name in self.classnames]


@dataclass(frozen=True)
class DatasetSplits:
    """Everything read from a dataset folder: the three splits and the classes."""

    train: tuple[Record, ...]
    val: tuple[Record, ...]
    test: tuple[Record, ...]
    class_ids: tuple[str, ...]
    classnames: tuple[str, ...]


class DatasetSpec(abc.ABC):
    """How one dataset is stored under ``data_root``.

    Subclasses set ``name`` (the registry key), ``dirname`` (folder under the data root) and ``image_root``
    (folder, relative to ``dirname``, that record paths are relative to), and implement :meth:`read`.
    """

    name: ClassVar[str]
    dirname: ClassVar[str]
    image_root: ClassVar[str] = "images"
    test_only: ClassVar[bool] = False  # domain-shift targets: no train/val split
    imagenet_classes: ClassVar[bool] = False  # labelled by ImageNet wnids (ImageNet and its variants)

    def root(self, data_root: Path) -> Path:
        return Path(data_root) / self.dirname

    def images(self, data_root: Path) -> Path:
        return self.root(data_root) / self.image_root

    @abc.abstractmethod
    def read(self, data_root: Path) -> DatasetSplits:
        """Read and validate the dataset; raise :class:`DataError` naming what is missing and how to fix it."""

    def prepare(self, data_root: Path) -> None:
        """Fetch or generate the dataset into ``data_root`` (default: explain the manual steps)."""
        raise DataError(
            f"{self.name}: automatic download is not available; place the dataset at "
            f"{self.root(data_root)} in the CoOp layout (see DATASETS docs)."
        )

    def is_ready(self, data_root: Path) -> bool:
        """True once :meth:`prepare` completed (a completion marker exists)."""
        return (self.root(data_root) / COMPLETE_MARKER).exists()


COMPLETE_MARKER = ".clipbench-complete"


def read_utf8(path: Path) -> str:
    """The text of ``path``; bytes that are not UTF-8 raise a :class:`DataError` naming the byte offset."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from exc


def read_split_json(
    path: Path, *, require: tuple[str, ...] = ("train", "val", "test")
) -> dict[str, tuple[Record, ...]]:
    """Read a CoOp ``split_zhou_*.json`` file: ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``."""
    if not path.is_file():
        raise DataError(f"split file {path} is missing; run `dvc repro download` or place the CoOp split file there")
    data = path.read_bytes()
    refuse_serialized_objects(data, path, "a CoOp split_zhou_*.json file")
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"split file {path} is not valid JSON ({exc}); re-download it") from exc
    if not isinstance(raw, dict) or set(raw) != {"train", "val", "test"}:
        raise DataError(f"split file {path} must be an object with exactly the keys train, val, test")
    out = {}
    for split in ("train", "val", "test"):
        records = tuple(_record(item, path, split, i) for i, item in enumerate(raw[split]))
        if split in require and not records:
            raise DataError(f"split file {path}: the {split!r} list is empty")
        out[split] = records
    return out


def _record(item: object, path: Path, split: str, index: int) -> Record:
    ok = isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[2], str)
    if not ok or isinstance(item[1], bool) or not isinstance(item[1], (int, str)):
        raise DataError(f"split file {path}: {split}[{index}] must be [relative_path, label, classname], got {item!r}")
    rel = item[0]
    if rel.startswith(("/", "\\")) or ".." in Path(rel).parts:
        raise DataError(
            f"split file {path}: {split}[{index}] path {rel!r} escapes the image root; "
            "paths must be relative and stay inside the dataset folder"
        )
    try:
        label = int(item[1])
    except ValueError as exc:
        raise DataError(f"split file {path}: {split}[{index}] label {item[1]!r} is not an integer") from exc
    return Record(rel, label, item[2])


def classes_from_records(records: tuple[Record, ...], source: Path) -> tuple[str, ...]:
    """Class names in label order (Dassl derives them from the training list); labels must be 0..n-1."""
    names: dict[int, str] = {}
    for r in records:
        if names.setdefault(r.label, r.classname) != r.classname:
            raise DataError(f"{source}: label {r.label} has two class names ({names[r.label]!r}, {r.classname!r})")
    n = max(names) + 1
    missing = sorted(set(range(n)) - set(names))
    if min(names) < 0 or missing:
        raise DataError(f"{source}: labels must cover 0..{n - 1}; missing {missing[:10]}")
    return tuple(names[i] for i in range(n))
