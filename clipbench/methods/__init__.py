"""Method registry: one line per method (key -> ``module:Class``).

Adding a method: create ``clipbench/methods/<key>.py`` with a provenance docstring, a frozen ``Config`` and a
:class:`~clipbench.methods.base.Method` subclass, then add one line below. Contract tests pick it up.
"""

from __future__ import annotations

from clipbench.methods.base import (
    EvalTarget,
    FeatureSet,
    FitTask,
    Inputs,
    Method,
    MethodConfig,
    check_by_dataset,
    resolve_config,
)
from clipbench.registry import Registry

METHODS: Registry[type[Method]] = Registry(
    "method",
    {
        "zeroshot": "clipbench.methods.zeroshot:ZeroShotCLIP",
        "linear_probe": "clipbench.methods.linear_probe:LinearProbe",
        "clip_adapter": "clipbench.methods.clip_adapter:ClipAdapter",
        "tip_adapter": "clipbench.methods.tip_adapter:TipAdapter",
        "tip_adapter_f": "clipbench.methods.tip_adapter_f:TipAdapterF",
        "coop": "clipbench.methods.coop:CoOp",
        "cocoop": "clipbench.methods.cocoop:CoCoOp",
        "zeroshot_ensemble": "clipbench.methods.zeroshot_ensemble:ZeroShotEnsemble",
        "prolip": "clipbench.methods.prolip:Prolip",
        "clipfit": "clipbench.methods.clipfit:ClipFit",
        "clip_cite": "clipbench.methods.clip_cite:ClipCite",
    },
    base=Method,
)


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


__all__ = [
    "METHODS",
    "EvalTarget",
    "FeatureSet",
    "FitTask",
    "Inputs",
    "Method",
    "MethodConfig",
    "check_by_dataset",
    "get_method",
    "resolve_config",
]
