"""Runtime settings: where and how cells are computed, never *what* is computed.

``params.yaml: runtime`` selects the device, the numeric precision of encoder-level training, decode workers,
the inference batch size and the cell executor. None of these enters a cell key (a result computed on a GPU
is reused on a CPU and vice versa); each stage records the resolved values in every ``cell.json`` it writes as
lineage, so a number can always be traced to the hardware and precision that produced it.
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
    executor: str = "serial"  # how the cells of one stage are run: serial, processes (one per core)
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

    def apply(self) -> None:
        """Process-wide settings a stage applies before it computes (torch's CPU thread count)."""
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)

    def torch_device(self) -> torch.device:
        """The resolved device (``auto`` becomes ``cuda`` when CUDA is available)."""
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


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise the named device (which must exist)."""
    parse_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"runtime.device: {name!r} was requested but no CUDA device is visible; set runtime.device: auto or cpu"
        )
    return device


DEFAULT_RUNTIME = RuntimeConfig()
