"""User datasets declared in ``params.yaml`` (``custom_datasets:``), without writing a spec class.

Two formats, both under ``<data_root>/<path>``:

* ``folders``: ``train/<class>/*``, ``val/<class>/*`` (optional) and ``test/<class>/*``; classes are the
  sorted training folder names (labels 0..n-1), used as class names (``_`` becomes a space in prompts).
* ``csv``: ``train.csv``, ``val.csv`` (optional) and ``test.csv`` with the header ``path,label,classname``;
  paths are relative to ``<path>``, labels 0..n-1 with one name each (the CoOp split-file convention).

A test-only dataset (a domain-shift target) has only ``test``. Without a validation split the K-shot sampler
draws the validation images from the unused training images, as for ImageNet. Every template set of the suite
resolves to the dataset's own ``templates``. Validation is the same as for the benchmark datasets: every
listed image must exist and every class must appear in every split.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar, Literal

from clipbench.data import DATASETS, metadata
from clipbench.data.base import DatasetSplits, Record, classes_from_records, read_utf8
from clipbench.data.coop import CoopSpec, check_files, check_labels, class_folders, folder_records
from clipbench.errors import ConfigError, DataError


@dataclass(frozen=True)
class CustomDataset:
    """One ``custom_datasets.<name>`` entry."""

    format: Literal["folders", "csv"]
    path: str  # folder relative to data_root
    templates: tuple[str, ...] = ("a photo of a {}.",)
    test_only: bool = False

    def validate(self, where: str) -> None:
        p = PurePosixPath(self.path)
        if p.is_absolute() or ".." in p.parts or not self.path.strip():
            raise ConfigError(
                f"{where}.path: {self.path!r} must be a folder relative to data_root "
                "(move or symlink the data there so manifests stay portable)"
            )
        if not self.templates:
            raise ConfigError(f"{where}.templates: list at least one template with one '{{}}' for the class name")
        metadata.check_templates(self.path, self.templates, f"{where}.templates")


class CustomSpec(CoopSpec):
    """A dataset spec built from a :class:`CustomDataset` entry."""

    config: ClassVar[CustomDataset]
    image_root = ""
    fix = "fix the folder or the `custom_datasets` entry in params.yaml (see clipbench/data/custom.py)"

    def missing(self, data_root: Path) -> list[str]:
        root = self.root(data_root)
        need = ["test" if self.config.format == "folders" else "test.csv"]
        if not self.test_only:
            need.append("train" if self.config.format == "folders" else "train.csv")
        return [str(root / rel) for rel in need if not (root / rel).exists()]

    def read(self, data_root: Path) -> DatasetSplits:
        root = self.require_layout(data_root)
        return self._read_folders(root) if self.config.format == "folders" else self._read_csv(root)

    def _read_folders(self, root: Path) -> DatasetSplits:
        classes = class_folders(root / ("test" if self.test_only else "train"), self.fix)
        if not classes:
            raise DataError(f"{root}: no class folders found; expected <split>/<class>/<image> ({self.fix})")
        labels = list(range(len(classes)))
        out = {}
        for split in ("train", "val", "test"):
            if not (root / split).is_dir() or (split != "test" and self.test_only):
                out[split] = ()
                continue
            present = class_folders(root / split, self.fix)
            if present != classes:
                raise DataError(
                    f"{root / split}: class folders differ from the training classes "
                    f"(missing {sorted(set(classes) - set(present))[:5]}, "
                    f"extra {sorted(set(present) - set(classes))[:5]})"
                )
            out[split] = folder_records(root, classes, labels, tuple(classes), prefix=split)
        ids = tuple(f"{self.name}/{c}" for c in classes)
        return DatasetSplits(out["train"], out["val"], out["test"], ids, tuple(classes))

    def _read_csv(self, root: Path) -> DatasetSplits:
        out = {
            s: _read_rows(root / f"{s}.csv") if (root / f"{s}.csv").is_file() else () for s in ("train", "val", "test")
        }
        if self.test_only:
            out["train"] = out["val"] = ()
        source = root / ("test.csv" if self.test_only else "train.csv")
        names = classes_from_records(out["test"] if self.test_only else out["train"], source)
        for split in ("val", "test"):
            if out[split] or split == "test":
                check_labels(out[split], names, root / f"{split}.csv", split)
        check_files(root, [r for rs in out.values() for r in rs], source, self.fix)
        ids = tuple(f"{self.name}/{n}" for n in names)
        return DatasetSplits(out["train"], out["val"], out["test"], ids, names)


def _read_rows(path: Path) -> tuple[Record, ...]:
    with io.StringIO(read_utf8(path), newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != ["path", "label", "classname"]:
            raise DataError(f"{path}: the header must be exactly path,label,classname, got {reader.fieldnames}")
        rows = []
        for i, row in enumerate(reader, start=2):
            rel = row["path"] or ""
            if rel.startswith(("/", "\\")) or ".." in PurePosixPath(rel).parts or not rel:
                raise DataError(f"{path}:{i}: path {rel!r} must be relative to the dataset folder")
            try:
                label = int(row["label"])
            except (TypeError, ValueError) as exc:
                raise DataError(f"{path}:{i}: label {row['label']!r} is not an integer") from exc
            if not row["classname"]:
                raise DataError(f"{path}:{i}: empty classname")
            rows.append(Record(rel, label, row["classname"]))
    if not rows:
        raise DataError(f"{path} lists no images")
    return tuple(rows)


def register_custom_datasets(entries: dict[str, CustomDataset], where: str) -> None:
    """Register every entry in the dataset registry and its templates (re-registering a custom name replaces it)."""
    for name, cfg in entries.items():
        if name in DATASETS and not issubclass(DATASETS.get(name), CustomSpec):
            raise ConfigError(f"{where}.{name}: {name!r} is a built-in dataset; choose another name")
        if not name.isidentifier() or not name.islower():
            raise ConfigError(f"{where}.{name}: dataset names must be lowercase identifiers")
        attrs = {"name": name, "dirname": cfg.path, "config": cfg, "test_only": cfg.test_only, "__module__": __name__}
        DATASETS.register(name, type(f"Custom_{name}", (CustomSpec,), attrs), replace=True)
        metadata.register_templates(name, cfg.templates)
