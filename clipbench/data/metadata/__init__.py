"""Prompt templates and class names as data files.

``templates.json`` maps dataset -> template set -> templates (spec §2.4); ``imagenet_classnames.txt`` is
ImageNet's ``<wnid> <CLIP class name>`` list in sorted-wnid (label) order, the file CoOp asks users to copy
into each ImageNet-family folder.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from clipbench.errors import ConfigError

_DIR = Path(__file__).parent
IMAGENET_CLASSNAMES = _DIR / "imagenet_classnames.txt"
_REGISTERED: dict[str, tuple[str, ...]] = {}  # datasets declared in params.yaml: one list for every set


def register_templates(dataset: str, templates: tuple[str, ...]) -> None:
    """Use ``templates`` for ``dataset`` whatever the template set (custom datasets)."""
    _REGISTERED[dataset] = tuple(templates)


@cache
def _templates() -> dict:
    return json.loads((_DIR / "templates.json").read_text())


def template_table() -> dict:
    """``templates.json`` as data: dataset -> template set -> items (``@name`` items expand in :func:`templates`)."""
    return _templates()


def template_sets(dataset: str) -> tuple[str, ...]:
    """The template sets defined for ``dataset`` (sorted); a registered custom dataset accepts any set."""
    if dataset in _REGISTERED:
        return ("*",)
    return tuple(sorted(_dataset_sets(dataset)))


def templates(dataset: str, template_set: str) -> tuple[str, ...]:
    """The prompt templates of ``dataset`` in ``template_set``; a clear error lists what exists."""
    if dataset in _REGISTERED:
        return _REGISTERED[dataset]
    sets = _dataset_sets(dataset)
    if template_set not in sets:
        raise ConfigError(
            f"text.template_set: {template_set!r} is not defined for {dataset!r}; available: {', '.join(sorted(sets))}"
        )
    shared = _templates().get("_shared", {})
    out: list[str] = []
    for item in sets[template_set]:
        out += shared[item[1:]] if item.startswith("@") else [item]
    return tuple(out)


def _dataset_sets(dataset: str) -> dict:
    table = _templates()
    if dataset.startswith("_") or dataset not in table:
        raise ConfigError(f"no prompt templates for dataset {dataset!r} in {_DIR / 'templates.json'}; add them")
    return table[dataset]


def check_templates(owner: str, templates: tuple[str, ...], where: str) -> None:
    """Every prompt template formats with a class name and holds it exactly once (no stray braces)."""
    marker = "\x00"
    for template in templates:
        try:
            ok = template.format(marker).count(marker) == 1 and template.count("{}") == 1
        except (ValueError, IndexError, KeyError):
            ok = False
        if not ok:
            raise ConfigError(
                f"{where}: template {template!r} of {owner!r} does not format with a class name; "
                "it needs exactly one '{}' and no other brace (write a literal brace as '{{' or '}}')"
            )
