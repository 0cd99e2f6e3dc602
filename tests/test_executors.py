"""The cell executor seam: every executor computes the same cells to the same bytes; stale-cell bookkeeping."""

from __future__ import annotations

import shutil

import pytest

from clipbench.cells import CellStore
from clipbench.config import SuiteConfig
from clipbench.errors import ConfigError
from clipbench.executors import run_cells
from clipbench.typed import parse

from conftest import tiny_params


def test_run_cells_computes_only_stale_cells_and_prunes(tmp_path):
    store, calls = CellStore(tmp_path), []

    def compute(cell: str, key: str) -> None:
        calls.append(cell)
        store.put(cell, key, lambda tmp: {})

    (tmp_path / "unplanned").mkdir()
    first = run_cells(["a", "b"], lambda c: f"k{c}", compute, store, name=lambda c: c)
    assert first.summary() == {"planned": 2, "computed": 2, "reused": 0, "pruned": 1}
    second = run_cells(["a", "b"], lambda c: "k2" if c == "b" else f"k{c}", compute, store, name=lambda c: c)
    assert second.summary() == {"planned": 2, "computed": 1, "reused": 1, "pruned": 0}
    assert calls == ["a", "b", "b"]


def test_a_removed_output_restores_its_cells_from_the_shared_store(tmp_path):
    """DVC deletes a stage's output before re-running it: unchanged cells come back from the store by key."""
    shared = tmp_path / "store"
    store, calls = CellStore(tmp_path / "out", shared), []

    def compute(cell: str, key: str) -> None:
        calls.append(cell)
        store.put(cell, key, lambda tmp: (tmp / "state").write_text(cell) and {})

    run_cells(["a", "b"], lambda c: f"k{c}", compute, store, name=lambda c: c)
    assert sorted(p.name for p in shared.iterdir()) == ["ka", "kb"]
    shutil.rmtree(tmp_path / "out")
    (shared / "kb" / "state").write_text("damaged")  # fails its seal: recomputed, never restored
    again = run_cells(["a", "b"], lambda c: f"k{c}", compute, store, name=lambda c: c)
    assert again.summary() == {"planned": 2, "computed": 1, "reused": 1, "pruned": 0}
    assert calls == ["a", "b", "b"] and (tmp_path / "out" / "a" / "state").read_text() == "a"
    assert (shared / "kb" / "state").read_text() == "b"  # the damaged stored copy was replaced


def test_unknown_executor_is_a_config_error():
    with pytest.raises(ConfigError, match=r"runtime.executor: unknown executor 'paralel'.*processes, serial"):
        parse(SuiteConfig, tiny_params(runtime={"executor": "paralel"}), "params.yaml")


def _pid(_item: int) -> None:
    import os

    _PIDS.append(os.getpid())


_PIDS: list[int] = []


@pytest.mark.parametrize("threads, forks", [(1, True), (2, False)])
def test_processes_executor_forks_only_single_threaded(threads, forks):
    """Forking after torch ran with several threads can hang a worker, so the executor then runs serially."""
    import os

    import torch

    from clipbench.executors import ProcessExecutor

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _PIDS.clear()
        done = list(ProcessExecutor(workers=2).map(_pid, [1, 2, 3]))
    finally:
        torch.set_num_threads(before)
    assert sorted(done) == [1, 2, 3]
    assert (_PIDS == []) is forks  # forked workers append to their own copy of the list
    if not forks:
        assert _PIDS == [os.getpid()] * 3
