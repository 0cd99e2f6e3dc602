"""The selection split: which validation set the methods that select something (``Method.selects``) select on.

``params.yaml: selection`` is a suite-level choice:

* ``fewshot_val`` (default; spec §5.6, the firewall decision): the few-shot validation set of each K-shot
  manifest, ``min(K, 4)`` images per class drawn by the K-shot sampler (:mod:`clipbench.data.kshot`);
* ``full_val``: the source dataset's whole own validation split (the CoOp split file's ``val``), encoded once per
  (backbone, dataset) beside the fit pool. Never test images.

A dataset without a validation split of its own (ImageNet, whose CoOp ``val`` is the test set; a custom dataset
without ``val``) falls back to ``fewshot_val`` for that dataset, whose validation images the sampler draws from
the unused training images. A fallback rather than an error: the paper suite mixes ImageNet with ten datasets
that have a validation split, and refusing ``full_val`` for the whole suite, or dropping ImageNet, would serve
no researcher; the fallback is recorded in each such cell's lineage and named in the report line.

Only the cell keys of methods that select depend on ``selection``, and only when it is not the default, so the
default leaves every key, manifest and feature cache as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipbench.data.base import Record
from clipbench.methods import METHODS
from clipbench.protocols import protocol_configs
from clipbench.typed import stable_hash

if TYPE_CHECKING:
    from clipbench.config import SuiteConfig

FEWSHOT_VAL = "fewshot_val"
FULL_VAL = "full_val"
SELECTIONS = (FEWSHOT_VAL, FULL_VAL)
DEFAULT = FEWSHOT_VAL
FALLBACK = "no validation split of its own"

DESCRIPTIONS = {
    FEWSHOT_VAL: "few-shot validation set, min(K, 4) images per class",
    FULL_VAL: "the source dataset's whole validation split (never test images)",
}


def selects(cfg: SuiteConfig, method: str, dataset: str) -> str:
    """What ``method`` selects on validation data for cells whose source is ``dataset``, under any protocol's
    config ("" nothing)."""
    base, own = protocol_configs(cfg, method, dataset)
    labels = dict.fromkeys(s for c in (base, *own.values()) if (s := METHODS.get(method).selects(c)))
    return " or ".join(labels)


def selecting_methods(cfg: SuiteConfig) -> dict[str, str]:
    """Every method of the suite that selects on some source dataset -> what it selects."""
    out = {}
    for method in cfg.methods:
        labels = dict.fromkeys(s for d in cfg.datasets if (s := selects(cfg, method, d)))
        if labels:
            out[method] = " or ".join(labels)
    return out


def needs_full_val(cfg: SuiteConfig, dataset: str) -> bool:
    """Whether ``dataset``'s whole validation split is listed and encoded: under ``full_val``, whichever methods
    the suite lists. Deliberately not "and some method selects": the split stage would then depend on every
    method's parameters, and changing one method's hyper-parameter would re-run every split stage."""
    return cfg.selection == FULL_VAL


def full_val_records(cfg: SuiteConfig, val: tuple[Record, ...]) -> tuple[Record, ...]:
    """The dataset's whole validation split ``val`` under ``full_val`` (empty: each manifest's few-shot ``val``,
    also on fallback). The train stage hands it only to the units whose config selects (``Method.selects``)."""
    return val if cfg.selection == FULL_VAL else ()


def applies(cfg: SuiteConfig, selects: str) -> bool:
    """Whether the selection split is part of a unit's key: a non-default split and a config that selects."""
    return cfg.selection != DEFAULT and bool(selects)


def key_part(cfg: SuiteConfig, selects: str, val: tuple[Record, ...]) -> dict | None:
    """What the selection adds to a training unit's key and lineage, given what its config ``selects`` ("":
    nothing); None (nothing) under the default or for a config that selects nothing, so those keys are unchanged."""
    if not applies(cfg, selects):
        return None
    if not val:
        return {"requested": cfg.selection, "used": FEWSHOT_VAL, "reason": FALLBACK}
    rows = [[r.path, r.label, r.classname] for r in val]
    return {"requested": cfg.selection, "used": cfg.selection, "images": len(val), "val_hash": stable_hash(rows)}


def summary_line(cfg: SuiteConfig, without_val: tuple[str, ...] = ()) -> str:
    """The report line naming the selection split, the selecting methods and any fallback dataset; "" when no
    method of the suite selects. ``without_val``: source datasets with no validation split of their own."""
    methods = selecting_methods(cfg)
    if not methods:
        return ""
    what = ", ".join(f"{m} {label}" for m, label in methods.items())
    line = f"Selection ({what}): {DESCRIPTIONS[cfg.selection]}"
    if cfg.selection == FULL_VAL and without_val:
        line += f"; {', '.join(without_val)}: {FALLBACK}, so {DESCRIPTIONS[FEWSHOT_VAL]} (from unused training images)"
    return line + ".\n"
