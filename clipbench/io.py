"""Atomic file and directory writes: a reader never sees a half-written artifact."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from clipbench.errors import DataError
from clipbench.safeload import refuse_serialized_objects


def _tmp_sibling(path: Path, directory: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    maker = tempfile.mkdtemp if directory else tempfile.mkstemp
    out = maker(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if not directory:
        os.close(out[0])
        return Path(out[1])
    return Path(out)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, fsync it, then rename it into place."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save tensors as safetensors (no pickle) atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a pickle, a truncated or a corrupt file raises :class:`DataError` naming it."""
    return load_tensors_with_metadata(path)[0]


def load_tensors_with_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and the string metadata of a safetensors file (errors as in :func:`load_tensors`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing; re-run the stage that writes it (`dvc repro`)")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[8:9] != b"{":  # a safetensors file starts with an 8-byte header length, then its JSON header
        refuse_serialized_objects(head, path, "a safetensors file")
    try:
        with safe_open(str(path), "pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt: delete it "
                        "and re-run the stage that writes it (`dvc repro`)") from exc


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block completes."""
    path = Path(path)
    tmp = _tmp_sibling(path, directory=True)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
