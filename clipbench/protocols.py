"""Expansion of the four protocols into training and evaluation cells (spec §5).

* few-shot: train on all classes of K-shot split (K, seed); score the full test split.
* base-to-new: train on the base half; score base test images among base classes and new test images among
  new classes (new classes reach the method only through its text classifier).
* cross-dataset / domain generalization: train on the source's K-shot split (all classes), score the source
  test split and, unchanged, each target's test split with the target's own classes.

A training cell serves every protocol that needs it: the 16-shot all-class model of a dataset that is both a
few-shot dataset and the transfer source is trained once.
"""

from __future__ import annotations

from clipbench.cells import EvalCell, TrainCell
from clipbench.config import SuiteConfig

PROTOCOLS = ("few_shot", "base2new", "cross_dataset", "domain_generalization")


def eval_cells(cfg: SuiteConfig) -> list[EvalCell]:
    """Every evaluation the suite asks for, in a stable order."""
    p, cells = cfg.protocols, []
    if p.few_shot:
        for d in p.few_shot.datasets:
            for k in p.few_shot.shots:
                cells += [EvalCell("few_shot", TrainCell(d, "all", k, s), d, "all", "acc") for s in p.few_shot.seeds]
    if p.base2new:
        for d in p.base2new.datasets:
            for s in p.base2new.seeds:
                train = TrainCell(d, "base", p.base2new.shots, s)
                cells += [EvalCell("base2new", train, d, "base", "base"), EvalCell("base2new", train, d, "new", "new")]
    for name in ("cross_dataset", "domain_generalization"):
        proto = getattr(p, name)
        if proto:
            for s in proto.seeds:
                train = TrainCell(proto.source, "all", proto.shots, s)
                cells += [EvalCell(name, train, t, "all", "acc") for t in (proto.source, *proto.targets)]
    return cells


def training_cells(cfg: SuiteConfig, dataset: str) -> list[TrainCell]:
    """Distinct training cells whose source is ``dataset``, sorted."""
    return sorted({c.train for c in eval_cells(cfg) if c.train.dataset == dataset})


def split_needs(cfg: SuiteConfig, dataset: str) -> list[tuple[int, int]]:
    """The (shots, seed) manifests the split stage must write for ``dataset``."""
    return sorted({(c.shots, c.seed) for c in training_cells(cfg, dataset)})


def eval_datasets(cfg: SuiteConfig) -> list[str]:
    """Datasets whose test split some evaluation reads."""
    return sorted({c.dataset for c in eval_cells(cfg)})
