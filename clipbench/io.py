"""Atomic file and directory writes: a reader never sees a half-written artifact."""

from __future__ import annotations

import errno
import glob
import hashlib
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

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _tmp_sibling(path: Path, directory: bool = False) -> Path:
    """A fresh ``.<name>.<pid>.<random>.tmp`` next to ``path``, after removing those a killed writer left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    maker = tempfile.mkdtemp if directory else tempfile.mkstemp
    out = maker(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    if not directory:
        os.close(out[0])
    tmp = Path(out if directory else out[1])
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())  # tempfile creates 0600/0700; use the umask
    return tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temporary siblings of ``path`` whose writing process no longer exists (killed mid-write)."""
    stale = []
    for tmp in Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*.tmp"):
        pid = tmp.name[len(Path(path).name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            stale.append(tmp)
    return stale


def _write_error(err: OSError, path: Path, detail: str = "") -> OSError:
    """``err`` restated with the artifact it was writing (and what to do when the disk is full)."""
    hint = "; free disk space and re-run" if err.errno in DISK_FULL else ""
    where = f"{path} ({detail})" if detail else str(path)
    reason = os.strerror(err.errno) if err.errno else str(err)
    return OSError(err.errno, f"could not write {where}: {reason}{hint}")


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (the single place text artifacts reach the disk)."""
    with open(path, "wb") as fh:
        fh.write(data)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, fsync it, then rename it into place.

    On any error (a full disk included) the temporary is removed, ``path`` keeps its previous content and the
    ``OSError`` names ``path``."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise _write_error(err, path) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: write_bytes(tmp, text.encode()))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# The only safetensors metadata key clipbench writes: JSON {"content_sha256": ..., "metadata": {...}}. One key, because
# safetensors does not order several keys, and the file bytes must be deterministic (DVC and sha256 checks).
SEALED_METADATA = "clipbench"


def content_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes and every metadata item (but the digest itself)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for key in sorted(metadata):
        digest.update(f"{key}={metadata[key]}|".encode())
    return digest.hexdigest()


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save tensors as safetensors (no pickle) atomically, with their content hash in the metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = dict(metadata or {})
    sealed = {"content_sha256": content_digest(tensors, metadata), "metadata": metadata}
    header = {SEALED_METADATA: json.dumps(sealed, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


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
            tensors, metadata = {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(
            f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt: delete it "
            "and re-run the stage that writes it (`dvc repro`)"
        ) from exc
    try:
        sealed = json.loads(metadata[SEALED_METADATA])
        recorded, metadata = sealed["content_sha256"], dict(sealed["metadata"])
    except (KeyError, TypeError, ValueError):
        recorded = None
    if recorded is None or recorded != content_digest(tensors, metadata):
        what = "has no content hash" if recorded is None else "fails its content hash check (changed since written)"
        raise DataError(f"{path} {what}; delete it and re-run the stage that writes it (`dvc repro`)")
    return tensors, metadata


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block completes.

    A disk-full error inside the block is re-raised naming ``path``; ``path`` keeps its previous content."""
    path = Path(path)
    tmp = _tmp_sibling(path, directory=True)
    try:
        try:
            yield tmp
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            raise _write_error(err, path, "while writing its files") from err
        if path.exists():
            old = _tmp_sibling(path, directory=True)
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
