"""Device placement: every model and tensor of extract, train and evaluate lives on ``runtime.device``.

No GPU is needed: the stages run on PyTorch's ``meta`` device standing in for an accelerator (``runtime.device:
cuda`` is resolved to ``meta``). Any operation mixing a CPU tensor with a ``meta`` one raises, so a model or
tensor left on the CPU fails the stage; a recorder also fails any module called with parameters or inputs on the
CPU and any matrix product with a CPU operand (a stage that never moved anything would otherwise pass).
Values read back (:mod:`clipbench.devices`) are zeros, so this checks placement, not numbers.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from clipbench import runtime

from conftest import every_method_suite, run_every_stage

HEAVY = {torch.matmul, torch.mm, torch.bmm, torch.einsum, torch.nn.functional.linear, torch.Tensor.__matmul__}


class CpuComputeRecorder(TorchFunctionMode):
    """Records every matrix product that has a floating-point operand on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu_calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        if func in HEAVY and any(t.device.type == "cpu" and t.is_floating_point() for t in tensors):
            self.cpu_calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _forward_on_device(module, inputs):
    """Modules holding parameters run with parameters and inputs on the device (parameter-free ones, e.g. the
    torchvision transforms of decoding, run wherever their input is)."""
    if next(module.parameters(), None) is None:
        return
    on_cpu = [n for n, p in module.named_parameters(recurse=False) if p.device.type == "cpu"]
    on_cpu += [f"input {i}" for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.device.type == "cpu"]
    assert not on_cpu, f"{type(module).__name__} ran with {on_cpu} on the CPU"


@pytest.fixture
def fake_accelerator(monkeypatch):
    """``runtime.device: cuda`` resolves to the ``meta`` device; module calls are checked, CPU products recorded."""
    real = runtime.resolve_device
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("meta") if name == "cuda" else real(name))
    handle = torch.nn.modules.module.register_module_forward_pre_hook(_forward_on_device)
    recorder = CpuComputeRecorder()
    try:
        yield recorder
    finally:
        handle.remove()


def test_every_stage_keeps_models_and_tensors_on_the_device(tmp_path, small_toy, fake_accelerator):
    cfg, layout, data_root = every_method_suite(tmp_path, "cuda")
    with fake_accelerator:
        run_every_stage(cfg, layout, data_root)
    assert fake_accelerator.cpu_calls == []
    cell_json = next(layout.models("toy_vit", "coop", cfg.datasets[0]).glob("*/cell.json"))
    assert '"device": "meta"' in cell_json.read_text()
