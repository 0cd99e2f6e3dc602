"""A small typed registry with lazy ``"module:Attr"`` entries.

Registries map stable lowercase keys to objects. Entries are import strings so that heavy or optional
dependencies of one method or dataset stay off the import path of everything else.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from fnmatch import fnmatch
from typing import Generic, TypeVar

from clipbench.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object table with lazy loading, a base-class check and helpful unknown-name errors."""

    def __init__(self, kind: str, entries: dict[str, str | T], base: type | None = None) -> None:
        self.kind = kind
        self._entries = dict(entries)
        self._loaded: dict[str, T] = {}
        self._base = base

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching an fnmatch ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch(n, pattern))

    def in_order(self) -> tuple[str, ...]:
        """Registered names in registration order (where the order is meaningful, e.g. report sections)."""
        return tuple(self._entries)

    def register(self, name: str, target: str | T, replace: bool = False) -> None:
        """Add ``name`` -> ``"module:Attr"``; a duplicate name is an error unless ``replace``."""
        if name in self._entries and not replace:
            raise KeyError(f"{self.kind} {name!r} is already registered (as {self._entries[name]})")
        self._loaded.pop(name, None)
        self._entries[name] = target

    def module_of(self, name: str) -> str:
        """The module that defines ``name``'s entry, without importing it (the root of its code fingerprint)."""
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        target = self._entries[name]
        if isinstance(target, str):
            return target.partition(":")[0]
        return target.__module__ if isinstance(target, type) else type(target).__module__

    def get(self, name: str) -> T:
        """The object registered as ``name``; unknown names raise :class:`UnknownNameError`."""
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), self._entries, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid {self.kind} names: {', '.join(self.names())}."

    def _load(self, name: str) -> T:
        target = self._entries[name]
        if not isinstance(target, str):  # a plain data entry (e.g. a backbone spec)
            return target
        module_name, _, attr = target.partition(":")
        obj = getattr(importlib.import_module(module_name), attr)
        if self._base is not None and not (isinstance(obj, type) and issubclass(obj, self._base)):
            raise TypeError(f"{self.kind} {name!r} ({self._entries[name]}) is not a subclass of {self._base.__name__}")
        return obj
