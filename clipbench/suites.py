"""Reduced suites: a suite's parameters cut down to a few datasets, shots and seeds (tests, ``clipbench bench``).

One place says what "a smaller suite" means: the first sources and targets, few shots and seeds (transfer and
base-to-new protocols at the largest shot count and the first seed), at most two augmented views per image
and a few-step toy backbone. Method settings for tiny runs live with each method (``Method.smoke``), see
:func:`smoke_params`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from clipbench.errors import ConfigError


@dataclass(frozen=True)
class Reduction:
    """How far :func:`reduced_params` cuts a suite down."""

    sources: int = 1  # first training sources kept
    targets: int = 1  # first test-only targets kept
    shots: tuple[int, ...] = (1, 4)  # few-shot K; the other protocols use max(shots)
    seeds: tuple[int, ...] = (1, 2)  # few-shot seeds; the other protocols use the first
    few_shot_sources: int | None = None  # few-shot protocol on the first n sources only (None: every source)
    views: int = 2  # distinct augmented views a cell reads per training image (``features.max_views``)
    toy_pretrain: dict[str, Any] = field(
        default_factory=lambda: MappingProxyType({"images": 128, "steps": 3, "batch_size": 32})
    )


def reduced_params(params: dict, reduction: Reduction = Reduction(), methods: dict[str, dict] | None = None) -> dict:
    """A copy of ``params`` (a ``params.yaml`` mapping) reduced as ``reduction`` says.

    ``methods`` (name -> ``method_params`` entry), if given, replaces the suite's methods and method params.
    """
    r, p = reduction, copy.deepcopy(params)
    if len(p.get("datasets") or []) < r.sources or len(p.get("targets") or []) < r.targets:
        raise ConfigError(
            f"reduced suite: needs {r.sources} dataset(s) and {r.targets} target(s) in params; "
            "list more or run the suite as it is"
        )
    src, tgt = p["datasets"][: r.sources], p["targets"][: r.targets]
    one, first = max(r.shots), list(r.seeds[:1])
    p.update(datasets=src, targets=tgt)
    p["protocols"] = {
        "few_shot": {"datasets": src[: r.few_shot_sources], "shots": list(r.shots), "seeds": list(r.seeds)},
        "base2new": {"datasets": src, "shots": one, "seeds": first},
        "cross_dataset": {"source": src[0], "targets": src[1:] or tgt, "shots": one, "seeds": first},
        "domain_generalization": {"source": src[0], "targets": tgt, "shots": one, "seeds": first},
    }
    p["features"] = {**(p.get("features") or {}), "max_views": r.views}
    p["toy_pretrain"] = {**(p.get("toy_pretrain") or {}), **r.toy_pretrain}
    if methods is not None:
        p["methods"], p["method_params"] = list(methods), {k: dict(v) for k, v in methods.items()}
    return p


def smoke_params(names: list[str], extra: dict[str, dict] | None = None) -> dict[str, dict]:
    """``method_params`` for a tiny run of ``names``: each method's ``smoke`` overrides, then ``extra``."""
    from clipbench.methods import METHODS

    extra = extra or {}
    return {n: {**copy.deepcopy(METHODS.get(n).smoke), **extra.get(n, {})} for n in names}


def capped_method_params(params: dict, caps: dict[str, int]) -> dict:
    """A copy of ``params`` whose methods' numeric settings named in ``caps`` (epochs, iterations, ...) are at most
    the cap, whether set in ``method_params`` or left at the Config default."""
    from clipbench.methods import METHODS

    p = copy.deepcopy(params)
    method_params = dict(p.get("method_params") or {})
    for name in p["methods"]:
        defaults = {f.name: f.default for f in dataclasses.fields(METHODS.get(name).Config)}
        own = dict(method_params.get(name) or {})
        own.update(_capped(own, defaults, caps))
        for key, value in own.items():  # protocol overrides (method_params.<m>.<protocol>)
            if isinstance(value, dict) and key not in defaults:
                own[key] = {k: min(v, caps[k]) if k in caps and v is not None else v for k, v in value.items()}
        method_params[name] = own
    p["method_params"] = method_params
    return p


def _capped(own: dict, defaults: dict, caps: dict[str, int]) -> dict:
    return {
        k: min(own.get(k, defaults[k]), cap)
        for k, cap in caps.items()
        if k in defaults and own.get(k, defaults[k]) is not None
    }
