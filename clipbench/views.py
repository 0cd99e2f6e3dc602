"""Which augmented training views the extract stage caches: exactly the (image, view) pairs a planned cell reads.

A method declares the views a cell reads (:meth:`~clipbench.methods.base.Method.view_need`): a
:class:`~clipbench.data.images.ViewRecipe` (its reference's training transform) and a count (one view per epoch
or step where the reference draws a fresh augmentation each time; Tip-Adapter's ``augment_views``). Rules, each in
this one place:

* a cell reads views ``0 .. count - 1`` of each of its training images, drawn by its recipe at its run seed
  (one stream for all seeds when the recipe is not seeded), with ``count`` capped by ``features.max_views``;
* the extract stage caches, per (recipe, seed) *group*, each training image's largest count over the cells that
  train on it, so methods, shots and protocols with the same recipe share encodes and nothing is encoded twice;
* view ``v`` of an image is a pure function of (path, ``v``, ``features.seed``, recipe, seed)
  (:func:`clipbench.data.images.view_rng`), so a group that grows keeps every view it had;
* pre-projection embeddings of a group are kept only when a method that reads them (ProLIP) is in it.

``code/views/<dataset>.json`` (the code stage) records each dataset's groups: the extract stage depends on it, so
a recipe or count change re-runs extraction only where the cached views change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clipbench.data.images import ViewRecipe
from clipbench.data.kshot import KShotSplit, subset_labels
from clipbench.methods import METHODS, Inputs
from clipbench.methods.base import ViewNeed
from clipbench.protocols import training_units

if TYPE_CHECKING:
    from clipbench.cells import TrainUnit
    from clipbench.config import SuiteConfig


def group_name(recipe: ViewRecipe, seed: int) -> str:
    """The group's name in the feature cache: ``<recipe key>/s<seed>`` (``/shared`` for an unseeded recipe)."""
    return f"{recipe.key}/{f's{seed}' if recipe.seeded else 'shared'}"


def unit_need(cfg: SuiteConfig, method: str, unit: TrainUnit) -> ViewNeed | None:
    """The views ``unit`` reads (its method's need, capped by ``features.max_views``); ``None``: none."""
    cls = METHODS.get(method)
    need = cls.view_need(unit.config, unit.cell.dataset, unit.cell.shots)
    if need is None:
        return None
    pre = need.pre or cls.requires is Inputs.PRE_PROJ_FEATURES
    return ViewNeed(need.recipe, need.count, pre).capped(cfg.features.max_views)


@dataclass
class ViewGroup:
    """The views one (recipe, seed) group caches: for each K-shot manifest subset it serves, the largest count."""

    recipe: ViewRecipe
    seed: int  # the run seed (0 for an unseeded recipe: every seed's cells read it)
    pre: bool = False
    reads: dict[tuple[int, int, str], int] = field(default_factory=dict)  # (shots, seed, subset) -> views

    @property
    def name(self) -> str:
        return group_name(self.recipe, self.seed)

    def image_counts(self, manifests: dict[tuple[int, int], KShotSplit]) -> dict[str, int]:
        """Training image -> the views cached for it, from the (shots, seed) manifests of the dataset."""
        counts: dict[str, int] = {}
        for (shots, seed, subset), count in self.reads.items():
            split = manifests[(shots, seed)]
            labels = set(subset_labels(split, subset))
            for record in split.train:
                if record.label in labels:
                    counts[record.path] = max(counts.get(record.path, 0), count)
        return dict(sorted(counts.items()))

    def as_plain(self) -> dict:
        reads = [[s, seed, subset, n] for (s, seed, subset), n in sorted(self.reads.items())]
        recipe = {"scale": list(self.recipe.scale), "flip": self.recipe.flip, "seeded": self.recipe.seeded}
        return {"name": self.name, "recipe": recipe, "pre": self.pre, "reads": reads}


def view_groups(cfg: SuiteConfig, dataset: str) -> list[ViewGroup]:
    """The view groups of source ``dataset`` over every planned training unit of every method (by name)."""
    groups: dict[str, ViewGroup] = {}
    for method in cfg.methods:
        for unit in training_units(cfg, method, dataset):
            need = unit_need(cfg, method, unit)
            if need is None:
                continue
            cell = unit.cell
            seed = cell.seed if need.recipe.seeded else 0
            group = groups.setdefault(group_name(need.recipe, seed), ViewGroup(need.recipe, seed))
            group.pre = group.pre or need.pre
            read = (cell.shots, cell.seed, cell.subset)
            group.reads[read] = max(group.reads.get(read, 0), need.count)
    return [groups[name] for name in sorted(groups)]


def plain_groups(cfg: SuiteConfig, dataset: str) -> list[dict]:
    """The groups of ``dataset`` as ``code/views/<dataset>.json`` records them (empty for a test-only target)."""
    return [g.as_plain() for g in view_groups(cfg, dataset)] if dataset in cfg.datasets else []


def estimated_pairs(group: ViewGroup, classes: int, train_size: int) -> int:
    """Upper bound on the group's cached (image, view) pairs before any split exists (cost plans): the K-shot
    pools of different K are taken as disjoint; a base-subset read shares its manifest's images with the
    "all" read of the same (K, seed)."""
    base = math.ceil(classes / 2)
    by_manifest: dict[tuple[int, int], dict[str, int]] = {}
    for (shots, seed, subset), count in group.reads.items():
        by_manifest.setdefault((shots, seed), {})[subset] = count
    pairs = 0
    for (shots, _), reads in by_manifest.items():
        everyone, base_only = reads.get("all", 0), reads.get("base", 0)
        pairs += min(train_size, classes * shots) * everyone
        pairs += min(train_size, base * shots) * max(0, base_only - everyone)
    return pairs
