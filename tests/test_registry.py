"""Registries: lazy entries, helpful unknown-name errors, duplicate guard, base-class check."""

from __future__ import annotations

import pytest

from clipbench.backbones import BACKBONES
from clipbench.data import DATASETS
from clipbench.errors import UnknownNameError
from clipbench.methods import METHODS, Method
from clipbench.registry import Registry


@pytest.mark.parametrize("registry", [METHODS, DATASETS, BACKBONES])
def test_unknown_name_lists_valid_names(registry):
    with pytest.raises(UnknownNameError) as err:
        registry.get("no_such_thing")
    for name in registry.names():
        assert name in str(err.value)


def test_near_match_is_suggested():
    with pytest.raises(UnknownNameError, match="Did you mean linear_probe"):
        METHODS.get("linear_prob")


def test_duplicate_registration_is_refused():
    reg = Registry("thing", {"a": "x:y"})
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a", "x:z")


def test_base_class_is_enforced():
    reg = Registry("method", {"bad": "clipbench.layout:Layout"}, base=Method)
    with pytest.raises(TypeError, match="not a subclass"):
        reg.get("bad")


def test_every_registered_entry_loads():
    for registry in (METHODS, DATASETS, BACKBONES):
        for name in registry.names():
            assert registry.get(name) is not None
    assert METHODS.names("*probe*") == ["linear_probe"]
