"""CLIP-Adapter: exact trainable parameters on the real architectures, identity at alpha = 0, Dassl schedule and
the validation policy (retrain per grid point, never a post-hoc alpha swap)."""

from __future__ import annotations

from dataclasses import replace

import open_clip
import pytest
import torch

from clipbench.errors import ConfigError
from clipbench.methods import EvalTarget
from clipbench.methods.clip_adapter import ClipAdapter, ClipAdapterConfig, val_accuracy
from clipbench.methods.training import count_trainable, dassl_lr
from clipbench.methods.zeroshot import zero_shot_logits
from clipbench.typed import parse

from conftest import synthetic_task


def make(**overrides) -> ClipAdapter:
    return ClipAdapter(parse(ClipAdapterConfig, overrides, "test clip_adapter"))


def target_of(task) -> EvalTarget:
    return EvalTarget(task.space, task.text_weights, task.logit_scale, task.space)


def test_defaults_are_the_documented_choices():
    cfg = parse(ClipAdapterConfig, {}, "method_params.clip_adapter")
    assert (cfg.lr, cfg.alpha, cfg.epochs, cfg.batch_size, cfg.reduction) == (2e-3, 0.2, 200, 32, 4)
    assert (cfg.momentum, cfg.weight_decay, cfg.warmup_lr) == (0.9, 5e-4, 1e-5)
    assert not cfg.select_alpha and not cfg.select_lr
    assert cfg.lr_grid == (2e-3, 1e-3, 1e-4, 1e-5) and cfg.alpha_grid == (0.2, 0.4, 0.6, 0.8)


@pytest.mark.parametrize(("arch", "expected"), [("ViT-B-16", 131_072), ("RN50", 524_288)])
def test_trainable_parameters_on_the_real_architectures(arch, expected):
    model = open_clip.create_model(arch, pretrained=None)
    dim = model.text_projection.shape[1]  # joint embedding: 512 (ViT-B/16), 1024 (RN50)
    task = synthetic_task(n_classes=3, shots=2, dim=dim, views=1)
    method = make(epochs=1)
    method.fit(task)
    assert count_trainable(method.adapter) == expected  # 2 x D x D/4, bias-free (spec)
    assert all(p.dim() == 2 for p in method.adapter.parameters())


def test_alpha_zero_gives_the_zero_shot_logits():
    task = synthetic_task()
    method = make(alpha=0.0, epochs=5)
    method.fit(task)
    x = task.val.plain
    assert torch.allclose(method.predict(x, target_of(task)), zero_shot_logits(x, target_of(task)), atol=1e-5)


def test_training_lowers_the_loss():
    task = synthetic_task()
    first = make(epochs=1).fit(task)["final_loss"]
    later = make(epochs=60).fit(task)["final_loss"]
    assert later < first


def test_dassl_schedule_warm_up_then_cosine_stepped_per_epoch(monkeypatch):
    seen = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    task = synthetic_task(n_classes=5, shots=8)  # 40 images, batch 32: one full batch per epoch, the rest dropped
    make(epochs=12).fit(task)
    assert seen == [dassl_lr(e, 2e-3, 12, warmup_lr=1e-5) for e in range(12)]
    assert seen[0] == 1e-5 and seen[1] == 2e-3


def test_validation_free_default_never_reads_the_validation_set():
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"validation set read ({name})")

    make(epochs=3).fit(replace(synthetic_task(), val=Untouchable()))


def test_val_selection_retrains_each_grid_point_and_keeps_the_best():
    task = synthetic_task(seed=3)
    grid = {"lr_grid": [2e-3, 1e-5], "alpha_grid": [0.2, 0.8], "epochs": 5}
    method = make(select_lr=True, select_alpha=True, **grid)
    info = method.fit(task)
    accs = {}
    for lr in grid["lr_grid"]:
        for alpha in grid["alpha_grid"]:
            single = make(lr=lr, alpha=alpha, epochs=5)
            single.fit(task)
            accs[(lr, alpha)] = val_accuracy(single.adapter, task, alpha)
            if (lr, alpha) == (info["lr"], info["alpha"]):
                chosen = single
    best = max(accs.values())
    assert info["val_acc"] == best
    assert (info["lr"], info["alpha"]) == next(k for k, v in accs.items() if v == best)
    assert method.alpha == info["alpha"]
    assert all(torch.equal(a, b) for a, b in zip(method.adapter.parameters(), chosen.adapter.parameters(), strict=True))


def test_alpha_changes_what_is_trained():
    task = synthetic_task()
    low, high = make(alpha=0.2, epochs=5), make(alpha=0.8, epochs=5)
    low.fit(task)
    high.fit(task)
    assert not torch.equal(low.adapter.fc[0].weight, high.adapter.fc[0].weight)


@pytest.mark.parametrize(
    "bad", [{"alpha_grid": [1.5]}, {"alpha": -0.1}, {"lr_grid": []}, {"epochs": 0}, {"lr_grid": [-1e-3]}]
)
def test_bad_config_is_rejected(bad):
    with pytest.raises(ConfigError):
        parse(ClipAdapterConfig, bad, "method_params.clip_adapter")
