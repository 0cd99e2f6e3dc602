"""Automatic download of the datasets that have a public source: fetch, verify, extract, validate, publish.

* Each file is streamed to ``<data_root>/.downloads/<dataset>/<file>.part`` with a progress bar (tqdm when
  installed), hashed while it streams, checked against the published checksum, and only then renamed to its
  final name (a cached complete file is reused).
* Archives are extracted into ``<data_root>/.staging/<dataset folder>`` (members that would escape the folder
  are refused), the result is validated like any user folder (structure and published sizes), the
  completion marker is written last, and the folder is renamed into ``<data_root>``. An interrupted or failed
  download therefore never leaves a dataset folder behind, let alone one marked complete.
* Checksums: the MD5 values are those that torchvision's dataset classes verify for the same files. The
  CoOp split files (Google Drive) and several archives have no published checksum (``md5=None``); for those
  the post-extraction validation against the published split sizes is the integrity check.
* An existing dataset folder is never overwritten or deleted: an incomplete one is reported with its fix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from clipbench.data.base import COMPLETE_MARKER
from clipbench.errors import DataError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One file of a dataset and where its content goes in the dataset folder."""

    url: str
    filename: str
    md5: str | None = None  # published checksum; None: the source publishes none (counts are verified instead)
    member: str | None = ""  # archive folder whose contents form the dataset folder; None: not an archive
    inner: str = ""  # an archive inside the extracted content to extract in place as well (Caltech101)


def drive(file_id: str, filename: str, member: str | None = None) -> Source:
    """A file the CoOp authors share on Google Drive (no published checksum; ``member=""`` for an archive)."""
    return Source(
        f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t", filename, member=member
    )


def fetch(source: Source, cache: Path, progress: bool = True) -> Path:
    """Download ``source`` into ``cache`` (reusing a complete earlier download) and verify its checksum."""
    dest = cache / source.filename
    if dest.is_file() and (source.md5 is None or _md5(dest) == source.md5):
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response, part.open("wb") as out:
            bar = _bar(int(response.headers.get("Content-Length") or 0), source.filename, progress)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar(len(chunk))
            bar(None)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DataError(
            f"download of {source.url} failed ({exc}); check the connection and run the download "
            "stage again (nothing was kept)"
        ) from exc
    if source.md5 is not None and digest.hexdigest() != source.md5:
        part.unlink(missing_ok=True)
        raise DataError(
            f"{source.filename} from {source.url} has MD5 {digest.hexdigest()}, expected {source.md5}: "
            "the download is corrupt or the file changed upstream; run the download stage again, or "
            "place the dataset by hand (docs/datasets.md)"
        )
    os.replace(part, dest)
    return dest


def install(
    spec, data_root: Path, validate: Callable[[Path], object], fetcher: Callable[[Source, Path], Path] = fetch
) -> Path:
    """Fetch ``spec.sources``, build the dataset folder, check it with ``validate(staging_root)``, publish it."""
    data_root = Path(data_root)
    final = spec.root(data_root)
    if final.exists():
        raise DataError(
            f"{final} exists but is incomplete ({', '.join(spec.missing(data_root)[:3])}); complete it "
            f"by hand or delete it so that clipbench can download it. {spec.fix}"
        )
    staging_root = data_root / ".staging" / spec.name
    shutil.rmtree(staging_root, ignore_errors=True)  # leftovers of an interrupted run
    staged = spec.root(staging_root)
    try:
        staged.mkdir(parents=True)
        for source in spec.sources:
            _place(source, fetcher(source, data_root / ".downloads" / spec.name), staged)
        spec.finish_install(staged)
        validate(staging_root)
        (staged / COMPLETE_MARKER).write_text(
            "".join(f"{s.filename} md5={s.md5 or 'unpublished'}\n" for s in spec.sources)
        )
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return final


def _place(source: Source, path: Path, staged: Path) -> None:
    if source.member is None:
        shutil.copyfile(path, staged / source.filename)
        return
    unpack = staged.parent / f".unpack-{source.filename}"
    shutil.rmtree(unpack, ignore_errors=True)
    extract(path, unpack)
    top = unpack / source.member
    if not top.is_dir():
        raise DataError(
            f"{source.filename} has no folder {source.member!r}; the archive layout changed upstream. "
            "Place the dataset by hand (docs/datasets.md)"
        )
    if source.inner:
        extract(top / source.inner, top)
        (top / source.inner).unlink()
    for entry in top.iterdir():
        os.replace(entry, staged / entry.name)
    shutil.rmtree(unpack, ignore_errors=True)


def extract(archive: Path, dest: Path) -> None:
    """Extract a tar(.gz) or zip archive into ``dest``; members escaping ``dest`` are refused."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                p = PurePosixPath(name)
                if p.is_absolute() or ".." in p.parts:
                    raise DataError(f"{archive}: member {name!r} would be written outside the dataset folder")
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            try:
                tf.extractall(dest, filter="data")
            except tarfile.FilterError as exc:
                raise DataError(f"{archive}: unsafe member refused ({exc})") from exc
    else:
        raise DataError(f"{archive} is neither a tar nor a zip archive; delete it and download again")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _bar(total: int, name: str, enabled: bool) -> Callable[[int | None], None]:
    """A progress callback: tqdm when installed and enabled, else silent."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        return lambda n: None
    bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=name, leave=False)
    return lambda n: bar.close() if n is None else bar.update(n)
