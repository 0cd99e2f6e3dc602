"""Strict conversion of plain YAML/JSON data into frozen dataclasses.

Unknown keys, missing required keys and values of the wrong type are rejected with a message that names the
full key path (``params.yaml: protocols.few_shot.shots[2]``) and what is accepted. No value is ever evaluated.
"""

from __future__ import annotations

import copyreg
import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from clipbench.errors import ConfigError

T = TypeVar("T")
ALLOW_NON_FINITE = "allow_non_finite"  # dataclass field metadata: this float field may be NaN or +-inf


def frozen_mapping(items: dict) -> types.MappingProxyType:
    """A read-only mapping, as configs hold them; it pickles (executors send configs to spawned workers)."""
    return types.MappingProxyType(items)


copyreg.pickle(types.MappingProxyType, lambda mapping: (frozen_mapping, (dict(mapping),)))


def check_finite(value: Any, where: str) -> None:
    """Refuse a NaN or infinite float anywhere in a converted value (``min(...) < 0`` is False for NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number; give a finite value")
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{where}[{i}]")


def parse(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; ``where`` prefixes error messages (e.g. ``"params.yaml: methods"``)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
            f"valid keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
            if not f.metadata.get(ALLOW_NON_FINITE):
                check_finite(kwargs[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r} ({_type_name(hints[name])})")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(where)
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    from_plain = getattr(tp, "from_plain", None)  # a type that parses itself (e.g. a registry-keyed mapping)
    if isinstance(tp, type) and callable(from_plain):
        return from_plain(value, where)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {_show(value)} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, where)
    if origin is tuple:
        return _convert_tuple(tp, value, where)
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return types.MappingProxyType(
            {_convert(key_tp, k, f"{where}[{k!r}]"): _convert(val_tp, v, f"{where}.{k}") for k, v in value.items()}
        )
    return _convert_scalar(tp, value, where)


def _convert_union(tp: Any, value: Any, where: str) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _convert(arg, value, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {_show(value)} matches none of {_type_name(tp)}")


def _convert_tuple(tp: Any, value: Any, where: str) -> tuple:
    args = get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {_show(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"{where}: expected a list of {len(args)} values, got {len(value)}")
    return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))


def _convert_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-5" (no dot) as a string; accept plain numeric strings only
            return float(value)
        except ValueError:
            pass
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {tp.__name__}, got boolean {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def to_plain(obj: Any) -> Any:
    """Dataclasses / mapping proxies / tuples -> JSON-compatible plain data (for hashing and logging)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 of the canonical JSON form of ``obj``."""
    text = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def tensor_hash(tensor, length: int = 16) -> str:
    """A short sha256 of a tensor's dtype, shape and bytes."""
    array = tensor.detach().cpu().contiguous().numpy()
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:length]
