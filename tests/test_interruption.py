"""A full disk or a ``kill -9`` in the middle of writing leaves no partial artifact, and a re-run completes.

Disk-full faults are injected where :mod:`clipbench.io` puts bytes on disk (``write_bytes`` for text and JSON,
``save_file`` for safetensors): the faulty write stores half of the bytes, then raises ``ENOSPC``.
A ``kill -9`` of a real ``dvc repro`` is tested in ``tests/test_dvc_repro.py``, on the project that test
has already reproduced (the uninterrupted reference).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch

from clipbench import io, tracking
from clipbench.pipeline import download, extract, split

SOURCE = "toy_objects"


class DiskFull:
    """Let ``allow`` writes through, then write half of the next one's bytes and raise ``ENOSPC``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, allow: int = 0) -> None:
        self.allow, self.writes, self.failed = allow, 0, None
        real_bytes, real_tensors = io.write_bytes, io.save_file

        def write_bytes(path, data: bytes) -> None:
            self._next(path, data) or real_bytes(path, data)

        def save_file(tensors, filename, metadata=None) -> None:
            self._next(filename, safetensors.torch.save(tensors, metadata=metadata)) or real_tensors(
                tensors, filename, metadata=metadata
            )

        monkeypatch.setattr(io, "write_bytes", write_bytes)
        monkeypatch.setattr(io, "save_file", save_file)

    def _next(self, path, data: bytes) -> bool:
        """False while writes are allowed; then store half of ``data`` at ``path`` and raise ``ENOSPC``."""
        if self.writes < self.allow:
            self.writes += 1
            return False
        Path(path).write_bytes(data[: len(data) // 2])
        self.failed = Path(path)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def temporaries(root: Path) -> list[Path]:
    return sorted(Path(root).rglob("*.tmp"))


def _assert_disk_full(err: pytest.ExceptionInfo, target: Path) -> None:
    assert err.value.errno == errno.ENOSPC
    assert str(target) in str(err.value) and "free disk space and re-run" in str(err.value)


@pytest.mark.parametrize("kind", ["json", "safetensors"])
def test_disk_full_mid_write_keeps_previous_artifact(tmp_path, monkeypatch, kind):
    path = tmp_path / f"artifact.{kind}"
    write = {
        "json": lambda v: io.atomic_write_json(path, {"value": v, "rows": list(range(200))}),
        "safetensors": lambda v: io.atomic_save_tensors(path, {"w": torch.full((64, 64), float(v))}),
    }[kind]
    write(1)
    good = path.read_bytes()
    fault = DiskFull(monkeypatch)
    with pytest.raises(OSError) as err:
        write(2)
    _assert_disk_full(err, path)
    assert fault.failed is not None and fault.failed != path  # the half-written bytes went to a temporary
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == [path.name]
    fresh = tmp_path / f"new.{kind}"
    with pytest.raises(OSError):
        (io.atomic_write_json(fresh, [1]) if kind == "json" else io.atomic_save_tensors(fresh, {"w": torch.ones(3)}))
    assert not fresh.exists() and not temporaries(tmp_path)
    monkeypatch.undo()
    write(2)
    reference = tmp_path / "reference"
    path.replace(reference)
    write(2)
    assert path.read_bytes() == reference.read_bytes() != good


def _assert_stage_survives_disk_full(
    monkeypatch, stage: Callable[[], object], root: Path, target: Path, allow: int
) -> None:
    """Run ``stage`` cleanly, again with the disk filling up after ``allow`` writes, then again cleanly."""
    stage()
    good = snapshot(root)
    DiskFull(monkeypatch, allow)
    with pytest.raises(OSError) as err:
        stage()
    _assert_disk_full(err, target)
    assert snapshot(root) == good and not temporaries(root)
    monkeypatch.undo()
    stage()
    assert snapshot(root) == good


def test_split_stage_survives_disk_full(project, monkeypatch):
    cfg, layout, data_root = project
    download.run(dataset=SOURCE, data_root=data_root, layout=layout)
    target = layout.splits(SOURCE)

    def stage():
        return split.run(dataset=SOURCE, cfg=cfg, layout=layout)

    _assert_stage_survives_disk_full(monkeypatch, stage, target.parent, target, allow=1)
    expected = snapshot(target)
    shutil.rmtree(target)  # no previous output: nothing may appear
    DiskFull(monkeypatch, allow=1)
    with pytest.raises(OSError):
        stage()
    assert not target.exists() and not temporaries(target.parent)
    monkeypatch.undo()
    stage()
    assert snapshot(target) == expected


def test_extract_stage_survives_disk_full(project, monkeypatch):
    cfg, layout, data_root = project
    download.run(dataset=SOURCE, data_root=data_root, layout=layout)
    split.run(dataset=SOURCE, cfg=cfg, layout=layout)

    def stage():
        return extract.run(backbone="toy_vit", dataset=SOURCE, cfg=cfg, layout=layout, data_root=data_root)

    # writes: text.safetensors, text/sets.json, then test/ (3 files), then fit/: the fit features fail half-written
    fit = layout.fit_features("toy_vit", SOURCE)
    _assert_stage_survives_disk_full(monkeypatch, stage, fit.parent, fit, allow=5)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_file = tmp_path / f".a.json.{dead.pid}.x1.tmp"
    stale_dir = tmp_path / f".d.{dead.pid}.x2.tmp"
    live = tmp_path / f".a.json.{os.getpid()}.x3.tmp"  # a writer that is still running
    other = tmp_path / f".ab.json.{dead.pid}.x4.tmp"  # another artifact's temporary
    for p in (stale_file, live, other):
        p.write_text("partial")
    stale_dir.mkdir()
    io.atomic_write_json(tmp_path / "a.json", {"ok": True})
    with io.atomic_directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("x")
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()
    assert (tmp_path / "d" / "f").read_text() == "x"


# --- MLflow logging interrupted between two store calls ----------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: not an ``Exception``, so nothing in clipbench catches it."""


def _logged(uri: str) -> dict[str, tuple]:
    """Active runs by name: (metrics, whether the content/key commit tag is present, pending tag)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    out = {}
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id], max_results=5000):
            done = tracking.CONTENT_TAG in r.data.tags or tracking.KEY_TAG in r.data.tags
            out[f"{exp.name}/{r.data.tags['mlflow.runName']}"] = (
                r.data.metrics,
                done,
                r.data.tags.get(tracking.PENDING_TAG),
                r.data.params,
            )
    return out


@pytest.mark.parametrize("kill_at", [1, 2, 4])
def test_tracking_killed_between_store_calls_is_completed_by_the_next_run(tmp_path, monkeypatch, kill_at):
    from mlflow.tracking import MlflowClient

    from test_report import make_results
    from test_tracking import _log

    results = make_results(shots=(1,), seeds=(1,))
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    _log(results, tmp_path / "ref", reference)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    calls, real = [], MlflowClient.log_batch

    def log_batch(self, *args, **kwargs):  # the kill_at-th batch never reaches the store
        calls.append(1)
        if len(calls) == kill_at:
            raise Killed
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    with pytest.raises(Killed):
        _log(results, tmp_path / "work", uri)
    monkeypatch.undo()
    _log(results, tmp_path / "work", uri)
    expected, got = _logged(reference), _logged(uri)
    assert got.keys() == expected.keys()
    for name, (metrics, done, pending, params) in got.items():
        assert (metrics, done, params) == expected[name][:2] + expected[name][3:], name
        assert pending in (None, "false"), name


def test_artifacts_get_the_umask_permissions_not_tempfile_ones(tmp_path):
    old = os.umask(0o022)
    try:
        io.atomic_write_json(tmp_path / "a.json", {"x": 1})
        with io.atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
