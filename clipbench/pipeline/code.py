"""Stage ``code``: one code fingerprint file per stage, method and dataset, computed from the import graph.

Every other stage depends on its fingerprint file instead of a hand-kept list of source paths, so DVC re-runs
exactly the stages whose code closure changed (:mod:`clipbench.codegraph`). The train and evaluate stages put
the same fingerprint into every cell key, so a forced or partial run never reuses a cell computed by other code.
The roots of each fingerprint are defined here and nowhere else.

Beside the fingerprints, ``code/text/<dataset>.json`` lists the extra text classifiers (template set ->
templates) the methods' text recipes need on each dataset (:mod:`clipbench.recipes`): the extract stage depends
on it, so a recipe change re-runs extraction only where the needed classifiers change. Likewise
``code/views/<dataset>.json`` lists the augmented-view groups the methods' view recipes need (:mod:`clipbench.views`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from clipbench import recipes, views
from clipbench.codegraph import fingerprint
from clipbench.data import DATASETS, metadata
from clipbench.io import atomic_directory
from clipbench.layout import Layout
from clipbench.methods import METHODS

if TYPE_CHECKING:
    from clipbench.config import SuiteConfig

SHARED_STAGES = ("split", "backbone", "extract", "aggregate", "track")  # one fingerprint each
PER_METHOD = ("train", "evaluate")  # one fingerprint per method
PER_DATASET = ("download",)  # one fingerprint per dataset (its spec module is a root)


def stage_roots(stage: str) -> tuple[str, ...]:
    return (f"clipbench.pipeline.{stage}", f"stages.{stage}")


def method_roots(stage: str, method: str) -> tuple[str, ...]:
    """The train or evaluate stage code plus the method's own module (its registry entry)."""
    return (*stage_roots(stage), METHODS.module_of(method))


def dataset_roots(stage: str, dataset: str) -> tuple[str, ...]:
    return (*stage_roots(stage), DATASETS.module_of(dataset))


def method_code(stage: str, method: str) -> str:
    """The code fingerprint that enters every ``stage`` cell key of ``method``."""
    return fingerprint(*method_roots(stage, method))["hash"]


def planned_files(cfg: SuiteConfig, layout: Layout) -> dict[Path, tuple[str, ...]]:
    """Fingerprint file -> roots, for every stage instance the suite plans."""
    files = {layout.code(stage): stage_roots(stage) for stage in SHARED_STAGES}
    files |= {layout.code(s, m): method_roots(s, m) for s in PER_METHOD for m in cfg.methods}
    files |= {layout.code(s, d): dataset_roots(s, d) for s in PER_DATASET for d in cfg.all_datasets()}
    return files


def text_sets(cfg: SuiteConfig, dataset: str) -> dict[str, list[str]]:
    """The extra text classifiers of ``dataset`` (template set -> its templates), as ``code/text/<d>.json``."""
    return {name: list(metadata.templates(dataset, name)) for name in recipes.extra_sets(cfg, dataset)}


def run(*, cfg: SuiteConfig, layout: Layout) -> dict[str, int]:
    """Write ``code/`` afresh (atomically): one JSON file per planned fingerprint, one text-set file per dataset."""
    files = planned_files(cfg, layout)
    contents = {path: fingerprint(*roots) for path, roots in files.items()}
    contents |= {layout.code("text", d): {"sets": text_sets(cfg, d)} for d in cfg.all_datasets()}
    contents |= {layout.code("views", d): {"groups": views.plain_groups(cfg, d)} for d in cfg.datasets}
    target = layout.code("x").parent
    with atomic_directory(target) as tmp:
        for path, content in contents.items():
            out = tmp / path.relative_to(target)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    return {"fingerprints": len(files)}
