"""Strict YAML reading for parameter files: bounded size, UTF-8 only, bounded aliases, no duplicate keys.

``params.yaml`` is read by every stage, so a hostile or mistaken file must fail fast and in one line: a file over
:data:`MAX_BYTES`, bytes that are not UTF-8 (the byte offset is named), aliases that expand to more than
:data:`MAX_NODES` values (a few hundred bytes of nested aliases expand to gigabytes) or a key given twice in
one mapping (YAML would silently keep the last one) is a :class:`~clipbench.errors.ConfigError` naming the file,
the line and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clipbench.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB; the paper suite's parameters are ~5 KB
MAX_NODES = 100_000  # values after expanding every alias; the paper suite has ~400


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that bounds what aliases expand to and refuses duplicate mapping keys."""

    def compose_document(self):  # noqa: ANN201 (PyYAML's signature)
        node = super().compose_document()
        size = _expanded_size(node, {}, set())
        if size > MAX_NODES:
            raise _refuse(
                node.start_mark, f"aliases expanding to {size:,} values (over {MAX_NODES:,})", "write values out"
            )
        return node

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _refuse(key_node.start_mark, f"duplicate key {key!r}", "keep one of the two entries")
            seen[key] = key_node
        return super().construct_mapping(node, deep)


class _Refused(yaml.YAMLError):
    pass


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """Number of values ``node`` stands for once every alias is expanded (a shared node counts each time)."""
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in open_:
        raise _refuse(node.start_mark, "a recursive alias", "write the value out")
    open_.add(id(node))
    children = node.value if isinstance(node, yaml.SequenceNode) else ()
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, memo, open_)
        if total > MAX_NODES:
            break
    open_.discard(id(node))
    memo[id(node)] = total
    return total


def _refuse(mark, what: str, fix: str) -> _Refused:  # noqa: ANN001
    return _Refused(f"line {mark.line + 1}, column {mark.column + 1}: {what} is not allowed; {fix}")


def read_text(path: Path, max_bytes: int = MAX_BYTES, kind: str = "parameters file") -> str:
    """The UTF-8 text of ``path``: a file over ``max_bytes`` or with invalid UTF-8 raises naming the offset."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(
                f"{path}: {kind} is {size:,} bytes, over the {max_bytes:,}-byte limit; "
                "parameters belong in a short file (large tables go in data files)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {kind} ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from exc


def load(path: Path, max_bytes: int = MAX_BYTES) -> Any:
    """Parse ``path`` with the strict loader (see the module docstring)."""
    text = read_text(path, max_bytes)
    try:
        loader = _StrictLoader(text)  # a SafeLoader: constructs plain data only
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML ({detail})") from exc
