"""The cell executor seam: one loop (plan -> key -> skip -> compute -> store) shared by the train and evaluate stages.

A stage hands :func:`run_cells` its planned cells, a key function, a compute function that publishes one cell
into a :class:`~clipbench.cells.CellStore`, and the executor named by ``runtime.executor``. The loop decides
what is stale (a cell whose stored key differs from its key now), lets the executor compute those, removes cells
no longer planned, and reports progress (cells done / to do, elapsed, ETA). Executors only decide *where and in
which order* stale cells run; they never change what a cell computes, so the choice is not part of any key.

Executors that run cells in other processes receive a picklable function: the stage's job object (e.g.
:class:`clipbench.pipeline.train.TrainJob`), which loads its inputs lazily, once per process. Keys are always
computed in the stage process.

* ``serial``: every stale cell in the stage process, in plan order.
* ``processes``: forked CPU workers (cheap to start; they inherit the loaded inputs). Fork is unsafe once CUDA
  (or a multi-threaded OpenMP pool) is initialised, so it is a CPU executor and falls back to serial then.
* ``gpus``: one *spawned* worker per visible GPU, each bound to its GPU for its lifetime
  (:func:`clipbench.runtime.bind_device`), taking the next stale cell whenever it finishes one. Spawned
  interpreters share no CUDA context or thread pool with the stage process, so neither fork hazard applies;
  the price is a few seconds per worker to import torch and load the stage's inputs once.

Adding an executor = one class with ``map(function, items)`` and one registry line below.
"""

from __future__ import annotations

import abc
import logging
import logging.handlers
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, TypeVar

from clipbench.cells import CellStore
from clipbench.registry import Registry

C = TypeVar("C")
T = TypeVar("T")
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


def _threaded() -> bool:
    """More than one torch CPU thread: a forked worker could inherit a held thread-pool lock and hang."""
    torch = sys.modules.get("torch")
    threaded = bool(torch is not None and torch.get_num_threads() > 1)
    if threaded:
        log.info(
            "processes executor: torch uses %d threads here (fork needs 1); running cells serially",
            torch.get_num_threads(),
        )
    return threaded


class ProcessExecutor(Executor):
    """Stale cells on ``workers`` forked processes (default: one per core), one cell at a time each.

    Every cell is seeded from its own identity and publishes itself into the cell store, so the results do not
    depend on the order or on the process a cell runs in (``tests/test_executors.py`` compares them with the
    serial executor). Forking is safe only while the process computes single-threaded (``runtime.cpu_threads:
    1``, as the toy stages set): a worker forked after torch has run with several threads may hang in torch's
    thread pool, so with more than one thread (an in-process caller) the cells run serially instead. CPU only.
    """

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def map(self, function: Callable[[C], None], items: Sequence[C]) -> Iterator[C]:
        global _JOB
        if len(items) < 2 or self.workers < 2 or _cuda_in_use() or _threaded():
            yield from SerialExecutor().map(function, items)
            return
        _JOB = (function, items)
        try:
            with multiprocessing.get_context("fork").Pool(min(self.workers, len(items))) as pool:
                for index in pool.imap_unordered(_call, range(len(items))):
                    yield items[index]
        finally:
            _JOB = None


def visible_gpus() -> tuple[str, ...]:
    """``cuda:0`` .. ``cuda:N-1`` for the N visible GPUs (counted through NVML: CUDA is not initialised here)."""
    import torch

    return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))


_WORKER: Callable | None = None  # the function a gpus worker applies to every item it is sent


def _start_worker(devices, function: Callable, threads: int, level: int, records) -> None:
    """Initialise one spawned worker: relay its log records, take one device and bind it, keep ``function``."""
    global _WORKER
    import torch

    from clipbench.runtime import bind_device

    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    logging.getLogger("clipbench").setLevel(level)
    torch.set_num_threads(threads)  # the stage process's setting (runtime.cpu_threads): same lineage, same bits
    bind_device(devices.get())
    _WORKER = function


def _apply_indexed(pair: tuple[int, object]) -> int:
    _WORKER(pair[1])
    return pair[0]


class _Relay(logging.Handler):
    """Hands a worker's log record to the stage process's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


class GpuExecutor(Executor):
    """Stale cells on one spawned worker per GPU (``devices``; default: every visible GPU), one cell at a time.

    Each worker binds its device once and loads the stage's inputs once (the backbone onto its own GPU), then
    takes the next stale cell whenever it finishes one (cells differ widely in cost). Results are those of
    ``serial``: every cell is seeded from its own identity and publishes itself atomically into the cell store.
    With fewer than two devices (or cells) the cells run serially in the stage process on ``runtime.device``.
    A worker that dies (e.g. killed for memory) fails the stage (``BrokenProcessPool``); finished cells are kept.
    """

    name = "gpus"

    def __init__(self, devices: tuple[str, ...] | None = None) -> None:
        self.devices = devices

    def map(self, function: Callable[[C], None], items: Sequence[C]) -> Iterator[C]:
        devices = visible_gpus() if self.devices is None else tuple(self.devices)
        if len(devices) < 2 or len(items) < 2:
            why = f"{len(devices)} device(s) visible" if len(devices) < 2 else f"{len(items)} cell(s) to compute"
            log.info("gpus executor: %s; running cells serially in the stage process", why)
            yield from SerialExecutor().map(function, items)
            return
        yield from self._pool(function, items, devices[: len(items)])

    def _pool(self, function: Callable[[C], None], items: Sequence[C], devices: tuple[str, ...]) -> Iterator[C]:
        import torch

        context = multiprocessing.get_context("spawn")
        queue, records = context.Queue(), context.Queue()
        for device in devices:
            queue.put(device)
        level = logging.getLogger("clipbench").getEffectiveLevel()
        args = (queue, function, torch.get_num_threads(), level, records)
        listener = logging.handlers.QueueListener(records, _Relay())
        listener.start()
        pool = ProcessPoolExecutor(len(devices), context, initializer=_start_worker, initargs=args)
        try:
            pending = {pool.submit(_apply_indexed, pair) for pair in enumerate(items)}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    yield items[future.result()]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            listener.stop()


EXECUTORS: Registry[type[Executor]] = Registry(
    "executor",
    {
        "serial": "clipbench.executors:SerialExecutor",
        "processes": "clipbench.executors:ProcessExecutor",
        "gpus": "clipbench.executors:GpuExecutor",
    },
    base=Executor,
)


@dataclass(frozen=True)
class CellJob:
    """Base of a stage's picklable per-cell work (train, evaluate): what it loads is memoised once per process
    (:meth:`_once`) and never pickled, so each executor worker loads a stage's inputs once."""

    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_memo": {}}

    def _once(self, name: object, load: Callable[[], T]) -> T:
        if name not in self._memo:
            self._memo[name] = load()
        return self._memo[name]


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


def _compute_pair(compute: Callable[[C, str], None], pair: tuple[C, str]) -> None:
    compute(*pair)


def _run(runner: Executor, compute, stale, progress: _Progress, name) -> Iterator[tuple]:
    for pair in runner.map(partial(_compute_pair, compute), stale):
        progress.step(name(pair[0]))
        yield pair
