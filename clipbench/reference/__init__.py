"""Published reference numbers (``published.csv``) and how a clipbench table entry finds its counterpart.

``published.csv`` and its ``README.md`` are shipped unchanged; ``sources.csv`` annotates every (paper, method)
pair of it with the clipbench method key it corresponds to (empty: none), the prompt-template setting the
number was obtained with, a rank among duplicate sources (1 = primary; a reprint ranks lower), whether it is
used for comparison at all, and the caveat a reader must see (the "known traps" of the README).

A published value is shown beside a reproduced entry only when method, backbone, protocol, dataset, shots,
metric and template setting all match:

* backbone: the clipbench backbone's open_clip architecture with OpenAI weights (``ViT-B-16`` = ``ViT-B/16``);
* shots: equal, except for a training-free method (zero-shot CLIP), whose numbers do not depend on shots
  (published as shot count 0, or as the table's 16 in base-to-new);
* the protocol's own rule (``Protocol.published_comparable``): an ``average`` only when the entry averages
  exactly the datasets the published average is over (11 datasets for few-shot and base-to-new, the 10
  cross-dataset targets, the 4 domain-generalization targets); transfer protocols only from an ``imagenet``
  source (every published transfer number is);
* template setting, compared per dataset: ``custom`` is CoOp's hand-crafted template per dataset,
  ``custom+imagenet7`` the same but the 7-template ensemble on ImageNet and its variants (Tip-Adapter, ProLIP),
  ``clipfit`` the same as ``custom`` except DTD, ``photo`` and ``ensemble`` stand alone and ``any`` marks a
  method whose number does not depend on hand-crafted templates (learned prompts, linear probe). The clipbench
  side's setting is the template set each method ran on each dataset (its text recipe, :mod:`clipbench.recipes`;
  the set ``imagenet7`` is the setting ``custom+imagenet7``); an average matches only where every averaged
  dataset matches.

Duplicate published rows are never averaged: the lowest rank wins, then file order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pandas as pd

from clipbench.data import imagenet_family_datasets
from clipbench.errors import DataError
from clipbench.protocols import get_protocol

_DIR = Path(__file__).parent
PUBLISHED_FILE = _DIR / "published.csv"
SOURCES_FILE = _DIR / "sources.csv"

CLASSIFICATION = (
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
)
IMAGENET_FAMILY = imagenet_family_datasets()
SET_SETTINGS = {"imagenet7": "custom+imagenet7"}  # clipbench template sets under their published setting's name
# the clipbench side's template set: one for every entry, or (method, protocol, dataset) -> the set it ran
Recipe = str | Callable[[str, str, str], str]
TRANSFER_SOURCE = "imagenet"  # the source of every published transfer number
TRAINING_FREE = frozenset({"zeroshot"})
METRIC_NAMES = {"acc": "acc", "base": "base", "new": "new", "H": "hm"}
_ARCHITECTURES = {"ViT-B-16": "ViT-B/16", "ViT-B-32": "ViT-B/32", "RN50": "RN50", "RN101": "RN101"}


@cache
def published() -> pd.DataFrame:
    """``published.csv`` joined with its annotations; ``printed`` keeps each value as printed."""
    table = pd.read_csv(PUBLISHED_FILE, dtype=str, keep_default_na=False, encoding="utf-8")
    notes = pd.read_csv(SOURCES_FILE, dtype=str, keep_default_na=False, encoding="utf-8")
    merged = table.merge(notes, on=["paper", "method"], how="left", validate="many_to_one", indicator=True)
    unannotated = merged[merged["_merge"] != "both"][["paper", "method"]].drop_duplicates()
    if len(unannotated):
        raise DataError(f"{SOURCES_FILE} lacks an annotation for {unannotated.iloc[0].to_dict()}; add a row")
    return merged.drop(columns="_merge").assign(
        printed=merged["value"],
        value=merged["value"].astype(float),
        shots=merged["shots"].astype(int),
        rank=merged["rank"].astype(int),
        order=range(len(merged)),
    )


def published_backbone(key: str) -> str | None:
    """The published name of a clipbench backbone key (``None`` for non-OpenAI or unregistered backbones)."""
    from clipbench.backbones.registry import BACKBONES

    if key not in BACKBONES.names():
        return None
    spec = BACKBONES.get(key)
    return _ARCHITECTURES.get(spec.model) if spec.pretrained == "openai" else None


def effective_templates(setting: str, dataset: str) -> str:
    """The templates a setting uses on ``dataset`` (``average``: the setting itself), for like-with-like joins."""
    if dataset == "average":
        return setting
    if setting == "custom+imagenet7":
        return "imagenet7" if dataset in IMAGENET_FAMILY else "custom"
    if setting == "clipfit":
        return "clipfit" if dataset == "dtd" else "custom"
    return setting


def _templates_ok(ref: pd.DataFrame, entry: dict, recipe: Recipe) -> pd.Series:
    """Rows whose template setting equals what the entry ran on its dataset (every averaged dataset)."""
    dataset = entry["column"]
    datasets = [d for d in str(entry.get("datasets") or "").split(";") if d] if dataset == "average" else [dataset]
    mine = {}  # dataset -> the effective setting the entry ran there
    for d in datasets or [dataset]:
        name = recipe if isinstance(recipe, str) else recipe(entry["method"], entry["protocol"], d)
        mine[d] = effective_templates(SET_SETTINGS.get(name, name), d)
    same = ref.templates.map(lambda t: all(effective_templates(t, d) == m for d, m in mine.items()))
    return (ref.templates == "any") | same


def _candidates(ref: pd.DataFrame, entry: dict, recipe: Recipe) -> pd.DataFrame:
    protocol, dataset, shots = entry["protocol"], entry["column"], int(entry["shots"])
    if not get_protocol(protocol).published_comparable(entry):
        return ref.iloc[:0]
    shot_ok = (ref.shots == shots) | (entry["method"] in TRAINING_FREE)  # zero-shot: no shot dependence
    templ_ok = _templates_ok(ref, entry, recipe)
    return ref[
        (ref.use == "yes")
        & (ref.clipbench_method == entry["method"])
        & (ref.protocol == protocol)
        & (ref.dataset == dataset)
        & (ref.metric == METRIC_NAMES.get(entry["metric"], ""))
        & shot_ok
        & templ_ok
    ]


def match(entries: pd.DataFrame, recipe: Recipe, ref: pd.DataFrame | None = None) -> pd.DataFrame:
    """``entries`` with ``published``, ``delta`` (reproduced − published), ``published_paper``/``_source``/``_note``.

    ``entries`` needs columns protocol, method, backbone, source, shots, column (dataset or ``average``),
    metric, mean, status and, for averages, ``datasets`` (the averaged dataset keys, ``;``-separated).
    ``delta`` is given only for complete (``ok``) entries. ``recipe``: the template set (or published setting)
    of every entry, or a function (method, protocol, dataset) -> the set that method ran there.
    """
    ref = published() if ref is None else ref
    found = []
    for entry in entries.to_dict("records"):
        name = published_backbone(entry["backbone"])
        rows = _candidates(ref[ref.backbone == name], entry, recipe) if name else ref.iloc[:0]
        if len(rows):
            best = rows.sort_values(["rank", "order"]).iloc[0]
            ok = entry.get("status", "ok") == "ok"
            found.append(
                {
                    "published": best.value,
                    "published_printed": best.printed,
                    "delta": entry["mean"] - best.value if ok else math.nan,
                    "published_paper": best.paper,
                    "published_source": best.source,
                    "published_note": best.note,
                }
            )
        else:
            found.append(
                {
                    "published": math.nan,
                    "published_printed": "",
                    "delta": math.nan,
                    "published_paper": "",
                    "published_source": "",
                    "published_note": "",
                }
            )
    columns = ["published", "published_printed", "delta", "published_paper", "published_source", "published_note"]
    extra = pd.DataFrame(found, index=range(len(entries)), columns=columns)
    return pd.concat([entries.reset_index(drop=True), extra], axis=1)
