"""Per-method text recipes: which text classifier (template set) a cell reads on each dataset it touches.

A method's ``Config.templates`` (:func:`~clipbench.methods.base.text_recipe`) names a template set of
``templates.json``; ``None`` means the suite's ``text.template_set``. The set decides the frozen text classifier
(``FitTask.text_weights`` / ``EvalTarget.text_weights``) and the label space's templates (what prompt-encoding
methods encode) of the training source and of every evaluated dataset (base/new, transfer and DG targets), each
resolved with the config of the cell's protocol (a ``by_dataset`` entry of that dataset may set it too).

Rules, each in this one place:

* a dataset that does not define the method's set uses the suite's set (the toy datasets define only
  ``custom``, so every reference recipe runs ``custom`` there); the set a cell ran is in its ``cell.json``;
* a set name that no dataset defines is an error at load time (``clipbench validate``);
* the classifier of (dataset, set) is the suite's ``text.safetensors`` when the set's templates equal the suite
  set's on that dataset (``imagenet7`` outside the ImageNet family), else ``text/<set>.safetensors`` beside it:
  the extract stage writes exactly the extra sets a planned cell reads, one per (dataset, set), shared by every
  method with that recipe.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from clipbench.data import metadata
from clipbench.errors import ConfigError
from clipbench.methods.base import MethodConfig, resolve_config
from clipbench.protocols import eval_cells

if TYPE_CHECKING:
    from clipbench.config import SuiteConfig


@cache
def known_sets() -> tuple[str, ...]:
    """Every template set some dataset of ``templates.json`` defines (sorted)."""
    table = metadata.template_table()
    return tuple(sorted({s for d, sets in table.items() if not d.startswith("_") for s in sets}))


def defines(dataset: str, template_set: str) -> bool:
    """Whether ``dataset`` has templates of ``template_set`` (a registered custom dataset has every set)."""
    sets = metadata.template_sets(dataset)
    return sets == ("*",) or template_set in sets


def template_set(config: MethodConfig, dataset: str, suite_set: str) -> str:
    """The set ``config`` (a protocol's config, or one already resolved for ``dataset``) uses on ``dataset``."""
    name = resolve_config(config, dataset).templates or suite_set
    return name if defines(dataset, name) else suite_set


def classifier_set(dataset: str, name: str, suite_set: str) -> str | None:
    """Which extra classifier (dataset, ``name``) reads: ``None`` for the suite's own ``text.safetensors``."""
    if name == suite_set or metadata.templates(dataset, name) == metadata.templates(dataset, suite_set):
        return None
    return name


def method_set(cfg: SuiteConfig, method: str, protocol: str | None, dataset: str) -> str:
    """The set ``method`` uses on ``dataset`` under ``protocol`` (``None``: its protocol-free config)."""
    return template_set(cfg.method_config(method, protocol), dataset, cfg.text.template_set)


def touched(cfg: SuiteConfig) -> list[tuple[str, str]]:
    """(protocol, dataset) pairs some planned cell reads a text classifier of: sources and evaluated datasets."""
    pairs = {(c.protocol, d) for c in eval_cells(cfg) for d in (c.train.dataset, c.dataset)}
    return sorted(pairs)


def used_sets(cfg: SuiteConfig) -> dict[tuple[str, str, str], str]:
    """(method, protocol, dataset) -> the set it runs, for every method and every (protocol, dataset) touched."""
    return {(m, p, d): method_set(cfg, m, p, d) for m in cfg.methods for p, d in touched(cfg)}


def extra_sets(cfg: SuiteConfig, dataset: str) -> tuple[str, ...]:
    """The extra classifiers the extract stage writes for ``dataset`` (none without per-method recipes)."""
    suite_set = cfg.text.template_set
    names = {classifier_set(d, s, suite_set) for (_, _, d), s in used_sets(cfg).items() if d == dataset}
    return tuple(sorted(n for n in names if n is not None))


def check(cfg: SuiteConfig, where: str) -> None:
    """Every recipe names a known set (one line naming method, protocol and dataset otherwise)."""
    known = known_sets()
    for method in cfg.methods:
        for protocol in (None, *cfg.overridden(method)):
            config, at = (
                cfg.method_config(method, protocol),
                f"method_params.{method}" + (f".{protocol}" if protocol else ""),
            )
            for dataset in cfg.all_datasets():
                name = resolve_config(config, dataset).templates
                if name is not None and name not in known:
                    raise ConfigError(
                        f"{where}: {at}.templates: unknown template set {name!r} (method {method!r}, dataset "
                        f"{dataset!r}); known sets: {', '.join(known)}"
                    )


def differing(cfg: SuiteConfig) -> dict[str, dict[str, tuple[str, ...]]]:
    """method -> set -> the datasets where its classifier is not the suite's (empty without per-method recipes)."""
    out: dict[str, dict[str, set[str]]] = {}
    for (method, _, dataset), name in used_sets(cfg).items():
        if classifier_set(dataset, name, cfg.text.template_set) is not None:
            out.setdefault(method, {}).setdefault(name, set()).add(dataset)
    return {m: {s: tuple(sorted(ds)) for s, ds in sets.items()} for m, sets in out.items()}


def summary_line(cfg: SuiteConfig) -> str:
    """The report's sentence on the recipes that differ from the suite's set ("" when none does)."""
    parts = [
        f"{method} `{name}` on {', '.join(datasets)}"
        for method, sets in differing(cfg).items()
        for name, datasets in sorted(sets.items())
    ]
    return f"Per-method text recipes (elsewhere the suite's set): {'; '.join(parts)}.\n" if parts else ""
