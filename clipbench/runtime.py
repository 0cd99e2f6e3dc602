"""Runtime settings: where and how cells are computed, never *what* is computed.

``params.yaml: runtime`` selects the device, the numeric precision of encoder-level training, decode workers,
the inference batch size and the cell executor. None of these enters a cell key (a result computed on a GPU
is reused on a CPU and vice versa); each stage records the resolved values in every ``cell.json`` it writes as
lineage, so a number can always be traced to the hardware and precision that produced it.

A worker of the ``gpus`` executor binds its own GPU for its lifetime (:func:`bind_device`); ``auto`` and ``cuda``
then resolve to it, so method code, backbone loading and lineage follow the worker without knowing about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from clipbench.errors import ConfigError


@dataclass(frozen=True)
class RuntimeConfig:
    """How cells run (``params.yaml: runtime``); not part of any cell key."""

    # "auto": the first CUDA device when one is visible, else the CPU; or "cpu", "cuda", "cuda:N"
    device: str = "auto"
    # "amp" on CUDA: frozen encoder passes (extraction, text encoding) under fp16 autocast as OpenAI CLIP's
    # reference, encoder-level training under bf16 autocast (fp16 + loss scaling where bf16 is unsupported);
    # features are always stored in fp32. The CPU always computes in fp32. "fp32": full precision everywhere.
    precision: Literal["fp32", "amp"] = "amp"
    decode_workers: int = 0  # image-decoding worker processes (0: decode in the stage process)
    batch_size: int = 256  # images per inference forward pass (evaluation of image-level methods)
    # how the cells of one stage are run: serial, processes (one per core), gpus (one worker per visible GPU)
    executor: str = "serial"
    # CPU threads of torch in each stage process (0: torch's default, one per core). The last bits of a
    # floating-point result can depend on it, as on the device: it is lineage, like the device.
    cpu_threads: int = 0
    keep_checkpoints: bool = False  # also keep full fp32 fine-tuned weights per cell (CLIP-CITE: ~571 MiB each)

    def validate(self, where: str) -> None:
        parse_device(self.device, f"{where}.device")
        if self.decode_workers < 0:
            raise ConfigError(f"{where}.decode_workers: must be >= 0, got {self.decode_workers}")
        if self.decode_workers and self.executor == "processes":
            raise ConfigError(
                f"{where}.decode_workers: the processes executor already runs one cell per core in daemon "
                "processes, which cannot start decode workers; set decode_workers: 0 or executor: serial"
            )
        if self.batch_size <= 0:
            raise ConfigError(f"{where}.batch_size: must be > 0, got {self.batch_size}")
        if self.cpu_threads < 0:
            raise ConfigError(f"{where}.cpu_threads: must be >= 0 (0: torch's default), got {self.cpu_threads}")
        from clipbench.executors import EXECUTORS

        if self.executor not in EXECUTORS:
            raise ConfigError(f"{where}.executor: {EXECUTORS.unknown_message(self.executor)}")
        check_executor_device(self.executor, self.device, where)

    def apply(self) -> None:
        """Process-wide settings a stage applies before it computes (torch's CPU thread count)."""
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)

    def torch_device(self) -> torch.device:
        """The device cells compute on: this process's bound device (:func:`bind_device`) for ``auto`` and
        ``cuda``, else the resolved one (``auto`` becomes ``cuda`` when a GPU is visible)."""
        if _BOUND is not None and self.device in ("auto", "cuda"):
            return _BOUND
        return resolve_device(self.device)

    def lineage(self) -> dict[str, str | int]:
        """What ``cell.json`` records about the run (the resolved device, not ``auto``)."""
        device = self.torch_device()
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        return {
            "device": str(device),
            "device_name": name,
            "precision": self.precision,
            "executor": self.executor,
            "cpu_threads": torch.get_num_threads(),
            "keep_checkpoints": int(self.keep_checkpoints),
            "torch": torch.__version__,
        }


def parse_device(name: str, where: str = "runtime.device") -> None:
    """Reject device strings other than ``auto``, ``cpu``, ``cuda`` and ``cuda:N``."""
    head, _, index = name.partition(":")
    ok = name in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit())
    if not ok:
        raise ConfigError(f"{where}: {name!r} is not a device; use auto, cpu, cuda or cuda:N")


def check_executor_device(executor: str, device: str, where: str = "runtime") -> None:
    """``executor: gpus`` places one worker on each visible GPU, so it needs ``device`` ``auto`` or ``cuda``."""
    if executor != "gpus" or device in ("auto", "cuda"):
        return
    fix = f"{where}.executor: serial or processes" if device == "cpu" else f"{where}.executor: serial"
    raise ConfigError(
        f"{where}.executor: gpus runs one worker per visible GPU and needs {where}.device auto or cuda, "
        f"got {device!r}; set {where}.device: cuda, or {fix} to run on {device}"
    )


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when a GPU is visible, else CPU; otherwise the named device (which must exist).

    GPUs are counted with ``torch.cuda.device_count`` (through NVML where it works), which unlike
    ``torch.cuda.is_available`` does not initialise the CUDA driver: resolving a device leaves ``fork`` usable.
    """
    parse_device(name)
    visible = torch.cuda.device_count()
    if name == "auto":
        return torch.device("cuda" if visible else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not visible:
        raise ConfigError(
            f"runtime.device: {name!r} was requested but no CUDA device is visible; set runtime.device: auto or cpu"
        )
    if device.type == "cuda" and (device.index or 0) >= visible:
        raise ConfigError(f"runtime.device: {name!r} was requested but only {visible} CUDA device(s) are visible")
    return device


_BOUND: torch.device | None = None  # this process's device, set once by a worker of the gpus executor


def bind_device(device: str | torch.device | None) -> torch.device | None:
    """Bind this process to ``device`` (``None``: unbind): :meth:`RuntimeConfig.torch_device` then returns it
    for ``runtime.device`` ``auto`` or ``cuda``, so a GPU worker computes, loads and records lineage on its own
    GPU. A CUDA device also becomes torch's current device (``torch.cuda.set_device``)."""
    global _BOUND
    _BOUND = None if device is None else torch.device(device)
    if _BOUND is not None and _BOUND.type == "cuda":
        torch.cuda.set_device(_BOUND)
    return _BOUND


DEFAULT_RUNTIME = RuntimeConfig()
