"""Runs every measurement in one process on this machine and returns the results the report formats."""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clipbench.bench.dvc_overhead import dvc_overhead, stage_count
from clipbench.bench.encodes import encode_audit
from clipbench.bench.fanout import fanout_overhead
from clipbench.bench.gpu_hours import gpu_estimate, measured_flops
from clipbench.bench.instruments import write_jpegs
from clipbench.bench.memory import peak_memory
from clipbench.bench.passes import encoder_passes
from clipbench.bench.sizes import CAPS, BenchSize
from clipbench.bench.throughput import throughput
from clipbench.bench.training import training_speedup
from clipbench.bench.verify import verify_cost
from clipbench.config import load_suite
from clipbench.errors import ConfigError
from clipbench.suites import capped_method_params, reduced_params


def reduced_suite(params: dict) -> dict:
    """The suite of sections (a) and (d): the first source and target (:func:`clipbench.suites.reduced_params`),
    every method's epochs / iterations / bisection steps capped (``CAPS``)."""
    if not params.get("datasets") or not params.get("targets"):
        raise ConfigError("bench: reducing the suite needs a dataset and a target in params; use --full")
    return capped_method_params(reduced_params(params), CAPS)


@dataclass
class Machine:
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    torch_threads: int = field(default_factory=torch.get_num_threads)
    load_before: tuple[float, ...] = field(default_factory=os.getloadavg)
    load_after: tuple[float, ...] = ()
    python: str = field(default_factory=platform.python_version)
    torch_version: str = torch.__version__
    gpu: str = field(default_factory=lambda: torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")


def run_bench(size: BenchSize, params: dict, root: Path, work: Path, log=print) -> dict:
    """Every section, in one process on this machine; returns the plain results :func:`render` formats."""
    machine, started = Machine(), time.perf_counter()
    suite = reduced_suite(params) if size.reduce_suite else copy.deepcopy(params)
    out: dict = {"size": size.name}
    log("(b) extraction throughput")
    jpegs = write_jpegs(work / "jpeg", max(max(n for _, n, _ in size.throughput), *size.memory_images), size.image_side)
    out["b"] = [throughput(work / "jpeg", jpegs[:n], model, batch) for model, n, batch in size.throughput]
    log("(c) training on cached features vs re-encoding")
    out["c"] = training_speedup(work / "c", size)
    log("(d) dvc repro bookkeeping")
    dvc_suite = dict(suite)
    if size.dvc_methods:
        dvc_suite["methods"] = [m for m in suite["methods"] if m in size.dvc_methods] or suite["methods"][:2]
        params_of = suite.get("method_params") or {}
        dvc_suite["method_params"] = {m: params_of[m] for m in dvc_suite["methods"] if m in params_of}
    out["d"] = {
        **dvc_overhead(root, work / "d", dvc_suite),
        "methods": dvc_suite["methods"],
        "toy_suite_stages": stage_count(params),
    }
    log("(i) clipbench launch: fan-out overhead and wall time with 2 local slots")
    out["i"] = fanout_overhead(root, work / "i", dvc_suite, out["d"]["wall_s"])
    log("(g) verified reads: hashing every artifact read, against the suite's time")
    out["g"] = verify_cost(work / "d", out["d"]["wall_s"], len(dvc_suite["methods"]))
    log("(a) encoder inputs of the toy suite vs unique images (reusing the data of d)")
    out["a"] = encode_audit(work / "a", suite, reuse=work / "d")
    log("(e) peak memory of extraction")
    out["e"] = peak_memory(work / "jpeg", size.memory_images)
    log("(f) FLOPs and GPU-hours of the paper suite")
    out["f"] = gpu_estimate(measured_flops(), load_suite(root / "configs" / "paper.yaml"))
    log("(j) encoder passes of the paper suite's plan vs the reference harnesses")
    out["j"] = encoder_passes(load_suite(root / "configs" / "paper.yaml"))
    machine.load_after = os.getloadavg()
    out["machine"] = dataclasses.asdict(machine)
    out["total_s"] = time.perf_counter() - started
    return out
