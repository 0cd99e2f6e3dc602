"""Device placement helpers: the one way tensors come back from the accelerator.

Models and tensors live on ``runtime.device`` from loading to result; they come back to the CPU only to be
written or read as Python numbers, always through :func:`to_host` (or :func:`host_float` / :func:`host_floats`).
A ``meta`` tensor comes back as zeros of its shape and dtype: tests run a stage on the ``meta`` device, where any
operation mixing a CPU tensor with a device tensor raises, to prove that nothing stays behind on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def to_host(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached on the CPU (a ``meta`` tensor: zeros of its shape and dtype)."""
    if t.is_meta:
        return torch.zeros(t.shape, dtype=t.dtype)
    return t.detach().cpu()


def host_float(t: torch.Tensor) -> float:
    """A one-element tensor as a Python float."""
    return float(to_host(t).reshape(-1)[0])


def host_floats(t: torch.Tensor) -> list[float]:
    """A tensor's values as Python floats (one device-to-host copy)."""
    return [float(v) for v in to_host(t).reshape(-1)]


def host_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of a state on the CPU (what is written)."""
    return {k: to_host(v) for k, v in state.items()}


def to_device(state: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor of a state on ``device``."""
    return {k: v.to(device) for k, v in state.items()}
