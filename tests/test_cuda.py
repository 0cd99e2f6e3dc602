"""Tests that need a real CUDA device (skipped without one; ``scripts/gpu_check.sh`` runs them on a GPU)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from clipbench import executors, features
from clipbench.bench.instruments import random_backbone, write_jpegs
from clipbench.methods import METHODS
from clipbench.pipeline import extract, train
from clipbench.runtime import RuntimeConfig

from conftest import encoder_task, every_method_suite, run_every_stage

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_every_stage_runs_on_the_real_cuda_device(tmp_path, small_toy):
    cfg, layout, data_root = every_method_suite(tmp_path, "cuda")
    run_every_stage(cfg, layout, data_root)
    cell_json = next(layout.models("toy_vit", "clipfit", cfg.datasets[0]).glob("*/cell.json"))
    assert '"device": "cuda:0"' in cell_json.read_text() or '"device": "cuda"' in cell_json.read_text()


def test_clipfit_amp_step_on_cuda_gives_finite_losses(tmp_path):
    data = encoder_task(tmp_path)
    task = dataclasses.replace(data["tasks"]["images"], runtime=RuntimeConfig(device="cuda", precision="amp"))
    task = dataclasses.replace(task, backbone=dataclasses.replace(task.backbone, model=task.backbone.model.cuda()))
    cls = METHODS.get("clipfit")
    method = cls(cls.Config(epochs=1, batch_size=2))
    diagnostics = method.fit(task.to(torch.device("cuda")))
    assert diagnostics["amp"] == 1.0 and torch.isfinite(torch.tensor(diagnostics["final_loss"]))


def test_extraction_on_cuda_matches_the_cpu(tmp_path):
    paths = write_jpegs(tmp_path, 8, 64)
    cpu = random_backbone("clipbench-toy-vit")
    gpu = dataclasses.replace(random_backbone("clipbench-toy-vit"), precision="fp32")
    gpu.model.cuda()
    a = features.encode_paths(cpu, tmp_path, paths, 4)
    b = features.encode_paths(gpu, tmp_path, paths, 4)
    for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True):
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-3)


def test_gpu_pool_trains_every_cell_on_a_worker_gpu(tmp_path, small_toy, monkeypatch):
    """``executor: gpus`` on every visible GPU (with one GPU, two workers share it, so the pool still runs)."""
    gpus = executors.visible_gpus()
    if len(gpus) < 2:
        monkeypatch.setattr(executors, "visible_gpus", lambda: gpus * 2)
    cfg, layout, data_root = every_method_suite(tmp_path, "cuda")
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, executor="gpus"))
    extract.run(backbone="toy_vit", dataset="toy_objects", cfg=cfg, layout=layout, data_root=data_root)
    for method in ("clip_adapter", "coop"):
        out = train.run(backbone="toy_vit", method=method, dataset="toy_objects", cfg=cfg, layout=layout)
        assert out["trained"] == out["planned"] > 1
        records = layout.models("toy_vit", method, "toy_objects").glob("*/cell.json")
        lineage = [json.loads(p.read_text())["runtime"] for p in records]
        assert len(lineage) == out["planned"]
        assert {r["executor"] for r in lineage} == {"gpus"}
        assert {r["device"] for r in lineage} <= set(executors.visible_gpus()), lineage
