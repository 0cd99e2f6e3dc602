"""Rules that need a dataset's index: checked by the split stage before sampling and by ``clipbench validate``.

The static rules (names, ranges, finite floats, templates, unique datasets per protocol) live with the typed
configs and run whenever ``params.yaml`` is loaded; these depend on the classes and images a dataset really has,
so they run once its index exists (``docs/rules.md`` lists every rule and its message).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipbench.data.kshot import short_classes, val_shots
from clipbench.errors import ConfigError, DataError
from clipbench.protocols import training_cells

if TYPE_CHECKING:
    from clipbench.config import SuiteConfig
    from clipbench.data.index import DatasetIndex
    from clipbench.layout import Layout


def check_dataset(cfg: SuiteConfig, index: DatasetIndex) -> None:
    """Every training cell planned on ``index.dataset`` can be sampled (a :class:`ConfigError` names the fix)."""
    cells = training_cells(cfg, index.dataset)
    classes = len(index.splits.class_ids)
    if any(c.subset == "base" for c in cells) and classes < 2:
        raise ConfigError(
            f"params.yaml: protocols.base2new.datasets: {index.dataset!r} has {classes} class; base-to-new splits "
            "the classes into a base and a new half, so it needs at least 2; remove the dataset from base2new"
        )
    if index.splits.val:
        return
    for shots in sorted({c.shots for c in cells}):
        # without a validation split, validation images are drawn from the training images not used as shots
        short = short_classes(index.splits.train, shots + 1)
        if short:
            name, n = next(iter(short.values()))
            raise ConfigError(
                f"params.yaml: {index.dataset!r} has no validation split, so its {shots}-shot validation images "
                f"(up to {val_shots(shots)} per class) come from the training images not drawn as shots; "
                f"{len(short)} classes have no image left (e.g. {name!r}: {n}); lower the shots or add a val split"
            )


def check_prepared(cfg: SuiteConfig, layout: Layout) -> list[str]:
    """:func:`check_dataset` on every training source whose index exists; returns the datasets checked."""
    from clipbench.data.index import load_index

    checked = []
    for dataset in cfg.datasets:
        path = layout.dataset_index(dataset)
        if path.is_file():
            check_dataset(cfg, load_index(path))
            checked.append(dataset)
    return checked


def check_prompts(dataset: str, classnames: tuple[str, ...], prompts: list[list[str]], tokenize) -> None:  # noqa: ANN001
    """Distinct classes must get distinct prompts once tokenised (a short text context cuts long names)."""
    by_tokens: dict[tuple, set[str]] = {}
    for name, texts in zip(classnames, prompts, strict=True):
        tokens = tuple(tuple(row) for row in tokenize(texts).tolist())
        by_tokens.setdefault(tokens, set()).add(name)  # same-named classes (ImageNet's two cranes) are allowed
    clash = next((sorted(names) for names in by_tokens.values() if len(names) > 1), None)
    if clash:
        raise DataError(
            f"{dataset}: classes {', '.join(map(repr, clash[:4]))} get identical prompts after tokenisation (the "
            "text encoder's context cuts them), so their classifiers would be identical; shorten the class names "
            "or the templates"
        )
