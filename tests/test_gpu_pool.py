"""The ``gpus`` executor: spawned workers, one per device, each bound to its device, computing serial's bytes.

No GPU is needed: the pool runs on explicit CPU devices. The stages are configured with ``runtime.device: cuda``,
which cannot be resolved on a machine without CUDA, so a cell computed (or a device resolved) in the stage process
instead of a bound worker fails the test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from functools import partial
from pathlib import Path

import pool_workers
import pytest
import torch

from clipbench import executors
from clipbench.cells import shared_store
from clipbench.config import SuiteConfig
from clipbench.errors import ConfigError
from clipbench.executors import GpuExecutor
from clipbench.pipeline import download, evaluate, extract, split, train
from clipbench.runtime import RuntimeConfig
from clipbench.suites import smoke_params
from clipbench.typed import parse

from conftest import make_project, tiny_params

METHODS = ["tip_adapter", "coop"]  # one feature-level method, one that trains through the backbone


def _cells(store: Path, drop: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Per cell: its state bytes (trained cells) and record, without timings and the runtime lineage."""
    out = {}
    for cell in sorted(p for p in store.iterdir() if p.is_dir()):
        record = json.loads((cell / "cell.json").read_text())
        record.pop("runtime")
        for name in drop:
            record.pop(name, None)
            record.get("row", {}).pop(name, None)
        state = cell / train.STATE_FILE
        out[cell.name] = (state.read_bytes() if state.is_file() else b"", record)
    return out


def _run_method(method: str, cfg: SuiteConfig, layout) -> tuple[dict, dict, dict]:
    """Train (the stale cells of) and evaluate ``method``: cells trained per source, toy_objects' and scored cells."""
    trained = {}
    for d in cfg.datasets:
        trained[d] = train.run(backbone="toy_vit", method=method, dataset=d, cfg=cfg, layout=layout)["trained"]
    evaluate.run(backbone="toy_vit", method=method, cfg=cfg, layout=layout)
    objects, scored = layout.models("toy_vit", method, "toy_objects"), layout.results("toy_vit", method) / "cells"
    return trained, _cells(objects, ("train_seconds",)), _cells(scored, ("train_seconds", "eval_seconds"))


def _lineage(store: Path) -> list[dict]:
    return [json.loads(p.read_text())["runtime"] for p in sorted(store.glob("*/cell.json"))]


def _cfg(data_root: Path, **runtime) -> SuiteConfig:
    params = tiny_params(data_root=str(data_root), methods=METHODS, runtime={"cpu_threads": 1, **runtime})
    params["method_params"] = smoke_params(METHODS)
    return parse(SuiteConfig, params, "test")


def test_gpu_pool_computes_the_same_cells_as_serial_on_bound_devices(tmp_path, small_toy, monkeypatch):
    _, layout, data_root = make_project(tmp_path)
    serial = _cfg(data_root, device="cpu")
    for d in serial.all_datasets():
        download.run(dataset=d, data_root=data_root, layout=layout)
        extract_only_test = d not in serial.datasets
        if not extract_only_test:
            split.run(dataset=d, cfg=serial, layout=layout)
        extract.run(
            backbone="toy_vit", dataset=d, cfg=serial, layout=layout, data_root=data_root, test_only=extract_only_test
        )
    pool = _cfg(data_root, device="cuda", executor="gpus")  # resolvable only by a worker bound to its device
    monkeypatch.setattr(executors, "visible_gpus", lambda: ("cpu", "cpu"))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # what runtime.cpu_threads: 1 does in a stage process
    try:
        for method in METHODS:
            _, *expected = _run_method(method, serial, layout)
            stores = [layout.models("toy_vit", method, "toy_objects"), layout.results("toy_vit", method) / "cells"]
            shared = [shared_store(layout.root, kind) for kind in ("train", "evaluate")]  # else restored, not run
            for store in [*stores, *shared]:  # toy_textures has one cell, which the pool would leave to the stage
                shutil.rmtree(store, ignore_errors=True)
            trained, *got = _run_method(method, pool, layout)
            assert trained["toy_objects"] > 1 and trained["toy_textures"] == 0
            assert got == expected
            lineage = [r for store in stores for r in _lineage(store)]
            assert lineage and {(r["device"], r["executor"], r["cpu_threads"]) for r in lineage} == {("cpu", "gpus", 1)}
    finally:
        torch.set_num_threads(previous)


def test_a_spawned_worker_resolves_auto_and_cuda_to_its_bound_device(tmp_path, caplog):
    assert str(RuntimeConfig(device="auto").torch_device()) == "cpu"  # nothing is bound in this process
    with caplog.at_level(logging.WARNING, "clipbench"):
        done = list(GpuExecutor(devices=("meta", "meta")).map(partial(pool_workers.probe, tmp_path), [0, 1, 2]))
    assert sorted(done) == [0, 1, 2]
    for item in done:
        devices = json.loads((tmp_path / f"{item}.json").read_text())
        assert devices == {"auto": "meta", "cuda": "meta", "cpu": "cpu"}
    assert sorted(r.getMessage() for r in caplog.records if r.name == "clipbench.test") == [
        "probe 0",
        "probe 1",
        "probe 2",
    ]  # a worker's log records reach the stage process's loggers


def test_a_failing_cell_fails_the_pool_with_its_error():
    with pytest.raises(ConfigError, match="cell 1 cannot be computed"):
        list(GpuExecutor(devices=("cpu", "cpu")).map(pool_workers.fail_on_one, [0, 1, 2, 3]))


def test_with_one_device_the_cells_run_serially_in_the_stage_process(caplog):
    seen = []
    with caplog.at_level(logging.INFO, "clipbench.executors"):
        assert list(GpuExecutor(devices=("cpu",)).map(seen.append, [3, 1, 2])) == [3, 1, 2]
    assert seen == [3, 1, 2]  # a closure: only the stage process could have run it
    assert "1 device(s) visible; running cells serially" in caplog.text


@pytest.mark.parametrize("device", ["cpu", "cuda:1"])
def test_gpus_executor_needs_device_auto_or_cuda(device):
    with pytest.raises(ConfigError, match=r"runtime.executor: gpus .* needs \S*runtime.device auto or cuda"):
        parse(SuiteConfig, tiny_params(runtime={"executor": "gpus", "device": device}), "params.yaml")
    for ok in ("auto", "cuda"):
        cfg = parse(SuiteConfig, tiny_params(runtime={"executor": "gpus", "device": ok}), "params.yaml")
        assert dataclasses.replace(cfg.runtime).executor == "gpus"
