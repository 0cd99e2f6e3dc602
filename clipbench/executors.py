"""The cell executor seam: one loop (plan -> key -> skip -> compute -> store) shared by the train and evaluate stages.

A stage hands :func:`run_cells` its planned cells, a key function, a compute function that publishes one cell
into a :class:`~clipbench.cells.CellStore`, and the executor named by ``runtime.executor``. The loop decides
what is stale (a cell whose stored key differs from its key now), lets the executor compute those, removes cells
no longer planned, and reports progress (cells done / to do, elapsed, ETA). Executors only decide *where and in
which order* stale cells run; they never change what a cell computes, so the choice is not part of any key.

Adding an executor = one class with ``map(function, items)`` and one registry line below.
"""

from __future__ import annotations

import abc
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from clipbench.cells import CellStore
from clipbench.registry import Registry

C = TypeVar("C")
log = logging.getLogger(__name__)


class Executor(abc.ABC):
    """Runs ``function`` over ``items``; yields each item once its call has returned."""

    name: str

    @abc.abstractmethod
    def map(self, function: Callable[[C], None], items: Sequence[C]) -> Iterator[C]:
        """Call ``function(item)`` for every item; re-raise the first failure."""


class SerialExecutor(Executor):
    """Every stale cell in order, in the stage process (the default)."""

    name = "serial"

    def map(self, function: Callable[[C], None], items: Sequence[C]) -> Iterator[C]:
        for item in items:
            function(item)
            yield item


_JOB: tuple[Callable, Sequence] | None = None  # (function, items) inherited by forked workers


def _call(index: int) -> int:
    function, items = _JOB
    function(items[index])
    return index


def _cuda_in_use() -> bool:
    """A CUDA context does not survive ``fork``: cells then run serially (a GPU pool is the executor for GPUs)."""
    torch = sys.modules.get("torch")
    in_use = bool(torch is not None and torch.cuda.is_initialized())
    if in_use:
        log.info("processes executor: CUDA is initialised in this process; running cells serially")
    return in_use


class ProcessExecutor(Executor):
    """Stale cells on ``workers`` forked processes (default: one per core), one cell at a time each.

    Every cell is seeded from its own identity and publishes itself into the cell store, so the results do not
    depend on the order or on the process a cell runs in (``tests/test_executors.py`` compares them with the
    serial executor). Forking is safe because the stage process computes single-threaded
    (``runtime.cpu_threads: 1``; with more threads torch's thread pool may hang in the workers). CPU only.
    """

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def map(self, function: Callable[[C], None], items: Sequence[C]) -> Iterator[C]:
        global _JOB
        if len(items) < 2 or self.workers < 2 or _cuda_in_use():
            yield from SerialExecutor().map(function, items)
            return
        _JOB = (function, items)
        try:
            with multiprocessing.get_context("fork").Pool(min(self.workers, len(items))) as pool:
                for index in pool.imap_unordered(_call, range(len(items))):
                    yield items[index]
        finally:
            _JOB = None


EXECUTORS: Registry[type[Executor]] = Registry(
    "executor",
    {
        "serial": "clipbench.executors:SerialExecutor",
        "processes": "clipbench.executors:ProcessExecutor",
    },
    base=Executor,
)


@dataclass(frozen=True)
class CellRun(Generic[C]):
    """What :func:`run_cells` did: every planned cell, the ones it computed and the ones it removed."""

    planned: tuple[C, ...]
    computed: tuple[C, ...]
    pruned: tuple[str, ...]

    def summary(self) -> dict[str, int]:
        return {
            "planned": len(self.planned),
            "computed": len(self.computed),
            "reused": len(self.planned) - len(self.computed),
            "pruned": len(self.pruned),
        }


class _Progress:
    """Progress lines (done / to do, elapsed, ETA): the first and last cell, and at most one every ``every`` s."""

    def __init__(self, label: str, total: int, every: float = 15.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.start = self.shown = time.perf_counter()
        self.done = 0

    def step(self, name: str) -> None:
        self.done += 1
        now = time.perf_counter()
        if self.done not in (1, self.total) and now - self.shown < self.every:
            return
        self.shown, elapsed = now, now - self.start
        eta = elapsed / self.done * (self.total - self.done)
        log.info("%s: %d/%d cells (%s) elapsed %.0fs, ETA %.0fs", self.label, self.done, self.total, name, elapsed, eta)


def stale_cells(
    plan: Iterable[C], key: Callable[[C], str], store: CellStore, name: Callable[[C], str]
) -> list[tuple[C, str]]:
    """(cell, key) of every planned cell whose stored key is not its key now."""
    pairs = [(cell, key(cell)) for cell in plan]
    return [(cell, k) for cell, k in pairs if not store.is_current(name(cell), k)]


def run_cells(
    plan: Sequence[C],
    key: Callable[[C], str],
    compute: Callable[[C, str], None],
    store: CellStore,
    executor: Executor | str = "serial",
    *,
    name: Callable[[C], str] = lambda c: c.name,
    label: str = "cells",
) -> CellRun[C]:
    """Compute every stale cell of ``plan`` with ``executor`` and prune unplanned cells from ``store``.

    ``compute(cell, key)`` must publish the cell into ``store`` under ``key`` (``CellStore.put``) so that a later
    run, or a crash in the middle, leaves only complete cells behind. A stale cell that the store's shared
    content-keyed store holds is restored from there instead of computed.
    """
    runner = EXECUTORS.get(executor)() if isinstance(executor, str) else executor
    stale = [(cell, k) for cell, k in stale_cells(plan, key, store, name) if not store.restore(name(cell), k)]
    progress = _Progress(label, len(stale))
    if stale:
        log.info("%s: %d of %d planned cells to compute (%s executor)", label, len(stale), len(plan), runner.name)
    done = [cell for cell, _ in _run(runner, compute, stale, progress, name)]
    pruned = store.prune({name(c) for c in plan})
    return CellRun(tuple(plan), tuple(done), tuple(pruned))


def _run(runner: Executor, compute, stale, progress: _Progress, name) -> Iterator[tuple]:
    def one(pair: tuple) -> None:
        compute(*pair)

    for pair in runner.map(one, stale):
        progress.step(name(pair[0]))
        yield pair
