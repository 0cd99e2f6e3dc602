"""Refuse serialized Python objects where clipbench expects data: nothing it reads is ever unpickled.

Split files, manifests and indexes are JSON; tensors are safetensors. A pickle (or a ``torch.save`` zip archive,
which holds one) can run arbitrary code when loaded, so a file that starts like one is rejected by its first bytes
with a message saying what to provide instead.
"""

from __future__ import annotations

from pathlib import Path

from clipbench.errors import DataError

PICKLE_MAGIC = (
    b"\x80\x02",
    b"\x80\x03",
    b"\x80\x04",
    b"\x80\x05",  # PROTO opcode of pickle protocols 2-5
    b"(dp",
    b"(lp",
    b"}q",
    b"]q",
)  # common openings of protocols 0 and 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save archives and numpy .npz files


def refuse_serialized_objects(data: bytes, path: Path, expected: str) -> None:
    """Refuse pickle and torch.save payloads by their first bytes: loading one could execute code."""
    if data.startswith(PICKLE_MAGIC) or data.startswith(ZIP_MAGIC):
        kind = "a zip/torch.save archive" if data.startswith(ZIP_MAGIC) else "a Python pickle"
        raise DataError(
            f"{path} is {kind}, which clipbench never loads (unpickling can run arbitrary code); "
            f"provide {expected} instead"
        )
