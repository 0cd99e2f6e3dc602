"""Sealed directories: ``seal.json`` records the sha256 of every file of a directory output when it is written.

Feature directories and cell directories are sealed as they are published; readers verify the seal before trusting
the content, so a file edited, swapped or damaged after it was written is noticed instead of scored. A verification
is cached for the process by every file's (size, mtime), so a directory read many times is hashed once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SEAL_FILE = "seal.json"
_CHUNK = 1 << 20
_verified: dict[tuple, str | None] = {}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != SEAL_FILE)


def seal(directory: Path) -> None:
    """Write ``seal.json`` for the files now in ``directory`` (call last, inside the atomic write)."""
    directory = Path(directory)
    files = {p.relative_to(directory).as_posix(): file_sha256(p) for p in _files(directory)}
    (directory / SEAL_FILE).write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")


def damage(directory: Path) -> str | None:
    """``None`` if every file of ``directory`` matches its seal, else what differs (the first file named)."""
    directory = Path(directory)
    files = [directory / SEAL_FILE, *_files(directory)]
    try:
        state = (str(directory), *((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    except OSError:
        return f"{directory / SEAL_FILE} is missing (the directory was not written by this version of clipbench)"
    if state not in _verified:
        _verified[state] = _compare(directory, files[1:])
    return _verified[state]


def _compare(directory: Path, files: list[Path]) -> str | None:
    try:
        recorded = json.loads((directory / SEAL_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{directory / SEAL_FILE} is unreadable"
    found = {p.relative_to(directory).as_posix(): p for p in files}
    for name in sorted(set(recorded) | set(found)):
        if name not in found:
            return f"{directory / name} is missing"
        if name not in recorded:
            return f"{directory / name} was added after the directory was written"
        if file_sha256(found[name]) != recorded[name]:
            return f"{directory / name} changed since it was written (sha256 mismatch)"
    return None


def _compare_all(directory: Path) -> str | None:
    """:func:`damage` without the cache (the benchmark of verified reads times this)."""
    return _compare(Path(directory), _files(Path(directory)))
