"""Prompt templates and class names as data files."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from clipbench.errors import ConfigError

_DIR = Path(__file__).parent


@cache
def _templates() -> dict:
    return json.loads((_DIR / "templates.json").read_text())


def templates(dataset: str, template_set: str) -> tuple[str, ...]:
    """The prompt templates of ``dataset`` in ``template_set``; a clear error lists what exists."""
    table = _templates()
    if dataset not in table:
        raise ConfigError(f"no prompt templates for dataset {dataset!r} in {_DIR / 'templates.json'}; add them")
    sets = table[dataset]
    if template_set not in sets:
        raise ConfigError(f"text.template_set: {template_set!r} is not defined for {dataset!r}; "
                          f"available: {', '.join(sorted(sets))}")
    return tuple(sets[template_set])
