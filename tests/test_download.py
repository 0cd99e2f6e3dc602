"""Automatic download: checksums, atomic publication, interruption safety, safe extraction (local file:// URLs)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from clipbench.data import DATASETS, get_dataset
from clipbench.data.base import COMPLETE_MARKER
from clipbench.data.download import Source, extract, fetch
from clipbench.data.index import load_index
from clipbench.errors import DataError
from clipbench.layout import Layout
from clipbench.pipeline import download

from coop_fixtures import PNG, write_split_json_dataset


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def dtd_sources(tmp_path, monkeypatch):
    """A miniature DTD release (tar.gz with a top-level dtd/ folder) and its split file, served from disk."""
    src = tmp_path / "upstream"
    write_split_json_dataset(src, "dtd")
    archive = src / "dtd-r1.0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "dtd" / "images", arcname="dtd/images")
    split = src / "dtd" / "split_zhou_DescribableTextures.json"
    sources = (
        Source(archive.as_uri(), archive.name, md5=md5(archive), member="dtd"),
        Source(split.as_uri(), split.name, member=None),
    )
    monkeypatch.setattr(DATASETS.get("dtd"), "sources", sources)
    return sources


def run(tmp_path, dataset="dtd"):
    (tmp_path / "data").mkdir(exist_ok=True)  # a missing data_root is an error (tests/test_bad_input.py)
    return download.run(dataset=dataset, data_root=tmp_path / "data", layout=Layout(tmp_path), counts="classes")


def test_download_verifies_extracts_validates_and_marks_complete(tmp_path, dtd_sources):
    index = load_index(run(tmp_path))
    root = tmp_path / "data" / "dtd"
    assert len(index.splits.class_ids) == 47 and (root / "images" / "banded").is_dir()
    assert f"dtd-r1.0.1.tar.gz md5={dtd_sources[0].md5}" in (root / COMPLETE_MARKER).read_text()
    assert "split_zhou_DescribableTextures.json md5=unpublished" in (root / COMPLETE_MARKER).read_text()
    assert not (tmp_path / "data" / ".staging" / "dtd").exists()
    assert get_dataset("dtd").is_ready(tmp_path / "data")
    run(tmp_path)  # a second run reuses the folder


def test_checksum_mismatch_keeps_nothing(tmp_path, dtd_sources, monkeypatch):
    bad = (Source(dtd_sources[0].url, dtd_sources[0].filename, md5="0" * 32, member="dtd"), dtd_sources[1])
    monkeypatch.setattr(DATASETS.get("dtd"), "sources", bad)
    with pytest.raises(DataError, match=r"dtd-r1.0.1.tar.gz from file://.* has MD5 [0-9a-f]{32}, expected 0{32}"):
        run(tmp_path)
    assert not (tmp_path / "data" / "dtd").exists()
    assert list((tmp_path / "data" / ".downloads" / "dtd").iterdir()) == []  # no .part left


def test_interrupted_download_never_leaves_a_complete_dataset(tmp_path, dtd_sources, monkeypatch):
    calls = []

    def flaky(source, cache):
        calls.append(source.filename)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run between the archive and the split file
        return fetch(source, cache, progress=False)

    monkeypatch.setattr(download, "install", lambda spec, root, check: _install(spec, root, check, flaky))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path)
    assert not (tmp_path / "data" / "dtd").exists() and not get_dataset("dtd").is_ready(tmp_path / "data")
    assert not (tmp_path / "data" / ".staging" / "dtd").exists()
    monkeypatch.undo()
    monkeypatch.setattr(DATASETS.get("dtd"), "sources", dtd_sources)
    assert load_index(run(tmp_path)).dataset == "dtd"  # the cached archive is reused after verification


def _install(spec, root, check, fetcher):
    from clipbench.data.download import install

    return install(spec, root, check, fetcher)


def test_invalid_content_after_extraction_is_not_published(tmp_path, dtd_sources, monkeypatch):
    split = Path(dtd_sources[1].url.removeprefix("file://"))
    raw = json.loads(split.read_text())
    raw["test"].append(["banded/not_in_archive.jpg", 0, "banded"])
    split.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="lists 1 images missing.*not_in_archive.jpg"):
        run(tmp_path)
    assert not (tmp_path / "data" / "dtd").exists()


def test_an_existing_incomplete_folder_is_never_overwritten(tmp_path, dtd_sources):
    mine = tmp_path / "data" / "dtd" / "images" / "my_file.jpg"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(PNG)
    with pytest.raises(DataError, match="exists but is incomplete.*delete it so that clipbench can download it"):
        run(tmp_path)
    assert mine.is_file()


def test_unsafe_archive_members_are_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside the dataset folder"):
        extract(evil, tmp_path / "out")
    tar = tmp_path / "evil.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="unsafe member"):
        extract(tar, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()


def test_nested_archive_and_imagenet_classnames_are_installed(tmp_path, monkeypatch):
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tf:
        info = tarfile.TarInfo("101_ObjectCategories/airplanes/image_0001.jpg")
        info.size = len(PNG)
        tf.addfile(info, io.BytesIO(PNG))
    outer = tmp_path / "caltech-101.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("caltech-101/101_ObjectCategories.tar.gz", inner.getvalue())
    from clipbench.data.download import _place

    staged = tmp_path / "staged"
    staged.mkdir()
    _place(Source(outer.as_uri(), outer.name, member="caltech-101", inner="101_ObjectCategories.tar.gz"), outer, staged)
    assert (staged / "101_ObjectCategories" / "airplanes" / "image_0001.jpg").is_file()
    assert not (staged / "101_ObjectCategories.tar.gz").exists()

    upstream = tmp_path / "imagenet-a.tar"
    with tarfile.open(upstream, "w") as tf:
        for wnid in ("n01498041", "n01531178"):
            info = tarfile.TarInfo(f"imagenet-a/{wnid}/0.jpg")
            info.size = len(PNG)
            tf.addfile(info, io.BytesIO(PNG))
    monkeypatch.setattr(DATASETS.get("imagenet_a"), "sources", (Source(upstream.as_uri(), upstream.name),))
    with pytest.raises(DataError, match="classes: expected 200, found 2"):  # validated before publication
        run(tmp_path, "imagenet_a")
    assert not (tmp_path / "data" / "imagenet-adversarial").exists()


@pytest.mark.parametrize("name", ["imagenet", "stanford_cars", "imagenet_sketch"])
def test_gated_or_offline_datasets_explain_the_manual_steps(tmp_path, name):
    with pytest.raises(DataError, match=f"{name} is not at .*cannot be downloaded automatically.*docs/datasets.md"):
        run(tmp_path, name)


def test_every_source_is_well_formed():
    for name in DATASETS.names():
        for source in getattr(DATASETS.get(name), "sources", ()):
            assert re.match(r"https?://", source.url), (name, source)
            assert source.md5 is None or re.fullmatch(r"[0-9a-f]{32}", source.md5), (name, source)
            assert "/" not in source.filename
