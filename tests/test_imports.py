"""Every module of the library imports first, on its own: no import cycle depends on which module comes first."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pytest

import clipbench

MODULES = sorted(m.name for m in pkgutil.walk_packages(clipbench.__path__, "clipbench."))


def _forget_clipbench() -> None:
    for name in [n for n in sys.modules if n == "clipbench" or n.startswith("clipbench.")]:
        del sys.modules[name]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_first(name):
    saved = {n: m for n, m in sys.modules.items() if n == "clipbench" or n.startswith("clipbench.")}
    _forget_clipbench()
    try:
        importlib.import_module(name)
    finally:
        _forget_clipbench()
        sys.modules.update(saved)
