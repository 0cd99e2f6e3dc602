"""ProLIP: exact trainable parameters on the real architectures, identity at W = W0, the regulariser, the schedule,
the view cycle and the validation policy."""

from __future__ import annotations

import math
from dataclasses import replace

import open_clip
import pytest
import torch

from clipbench.errors import ConfigError
from clipbench.methods import EvalTarget, FeatureSet
from clipbench.methods import prolip as prolip_module
from clipbench.methods.prolip import Projection, Prolip, ProlipConfig, penalty, train_projection
from clipbench.methods.training import count_trainable
from clipbench.methods.zeroshot import zero_shot_logits
from clipbench.typed import parse

from conftest import encoder_task


def make(**overrides) -> Prolip:
    return Prolip(parse(ProlipConfig, overrides, "test prolip"))


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return encoder_task(tmp_path_factory.mktemp("prolip_task"), n_classes=4, shots=3, views=3)


@pytest.fixture(scope="module")
def rn50_visual():
    return open_clip.create_model("RN50", pretrained=None).visual


def target(task) -> EvalTarget:
    return EvalTarget(task.space, task.text_weights, task.logit_scale, task.space, backbone=task.backbone)


def test_vitb16_trains_exactly_the_visual_projection():
    visual = open_clip.create_model("ViT-B-16", pretrained=None).visual
    proj = Projection.from_visual(visual)
    assert proj.weight.shape == (768, 512)
    assert count_trainable(proj) == 393_216  # 768 x 512 (spec)
    assert proj.weight.data_ptr() != visual.proj.data_ptr()


def test_rn50_trains_the_c_proj_weight_with_its_bias_frozen(rn50_visual):
    proj = Projection.from_visual(rn50_visual)
    count = count_trainable(proj)
    assert count == 2_097_152  # 1024 x 2048 (spec)
    assert count != 2_098_176  # weight + bias: the bias would have been trained by mistake
    assert "bias" in dict(proj.named_buffers()) and not proj.bias.requires_grad


def test_rn50_projection_trains_on_pre_features_and_leaves_bias_and_backbone_alone(rn50_visual):
    c_proj = rn50_visual.attnpool.c_proj
    original = {k: v.clone() for k, v in c_proj.state_dict().items()}
    initial = Projection.from_visual(rn50_visual)
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(6, 2048, generator=g)
    assert torch.equal(initial(pre), torch.nn.functional.linear(pre, c_proj.weight, c_proj.bias))
    text = torch.nn.functional.normalize(torch.randn(3, 1024, generator=g), dim=-1)
    train = FeatureSet(pre, torch.tensor([0, 1, 2, 0, 1, 2]), pre[None] + 0.01)
    trained, _ = train_projection(initial, train, text, 100.0, lr=1e-3, lam=1.0, steps=3, eps=1e-4)
    assert not torch.equal(trained.weight, initial.weight)
    assert torch.equal(trained.bias, c_proj.bias)
    assert all(torch.equal(v, original[k]) for k, v in c_proj.state_dict().items())


def test_projection_copy_reproduces_the_backbone_projection(enc):
    backbone, pre = enc["backbone"], enc["x"]["pre_proj"]
    with torch.no_grad():
        assert torch.equal(Projection.from_visual(backbone.model.visual)(pre), backbone.project(pre))


def test_with_w_equal_w0_predictions_are_the_zero_shot_logits(enc):
    task = enc["tasks"]["pre_proj"]
    method = make(lr=0.0, steps=5)
    method.fit(task)
    assert torch.equal(method.proj.weight, task.backbone.model.visual.proj)
    pre = enc["x"]["pre_proj"]
    with torch.no_grad():
        expected = zero_shot_logits(task.backbone.project(pre), target(task))
    assert torch.equal(method.predict(pre, target(task)), expected)


def _training_args(enc) -> tuple:
    """(initial projection, train features, text weights, logit scale) of the pre-projection task."""
    task = enc["tasks"]["pre_proj"]
    return Projection.from_visual(task.backbone.model.visual), task.train, task.text_weights, task.logit_scale


def test_training_lowers_the_loss(enc):
    args = _training_args(enc)
    _, first = train_projection(*args, lr=1e-3, lam=0.0, steps=1, eps=1e-4)
    _, later = train_projection(*args, lr=1e-3, lam=0.0, steps=60, eps=1e-4)
    assert later["final_ce"] < first["final_ce"]


def test_penalty_is_the_sum_of_squares_not_the_mean():
    w0 = torch.zeros(3, 4)
    assert penalty(w0 + 2.0, w0).item() == pytest.approx(48.0)  # 12 elements x 4; the mean would be 4


def test_penalty_pulls_towards_the_initial_projection(enc):
    args = _training_args(enc)
    initial = args[0]
    free, _ = train_projection(*args, lr=1e-2, lam=0.0, steps=30, eps=1e-4)
    held, _ = train_projection(*args, lr=1e-2, lam=10.0, steps=30, eps=1e-4)
    assert penalty(held.weight, initial.weight) < penalty(free.weight, initial.weight)


@pytest.mark.parametrize(
    ("rule", "value", "expected"), [("1/N", 0.0, 1 / 3), ("1/N^2", 0.0, 1 / 9), ("fixed", 0.05, 0.05)]
)
def test_lambda_rule_uses_shots_per_class(enc, rule, value, expected):
    info = make(steps=2, lambda_rule=rule, lambda_value=value).fit(enc["tasks"]["pre_proj"])
    assert info["lambda"] == pytest.approx(expected)


def test_cosine_schedule_over_all_steps_stepped_per_iteration(enc, monkeypatch):
    seen = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    make().fit(enc["tasks"]["pre_proj"])
    assert len(seen) == 300
    expected = [1e-5 * 0.5 * (1 + math.cos(math.pi * t / 300)) for t in range(300)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_step_t_uses_cached_view_t_mod_v(enc, monkeypatch):
    task = enc["tasks"]["pre_proj"]
    views = task.train.views
    seen = []
    forward = Projection.forward

    def recording(self, x):
        if torch.is_grad_enabled():
            seen.append(x.clone())
        return forward(self, x)

    monkeypatch.setattr(Projection, "forward", recording)
    make(steps=7).fit(task)
    assert len(seen) == 7
    assert all(torch.equal(x, views[t % len(views)]) for t, x in enumerate(seen))


def test_validation_free_default_never_reads_the_validation_set(enc):
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"validation set read ({name})")

        def __len__(self):
            raise AssertionError("validation set read (len)")

    task = replace(enc["tasks"]["pre_proj"], val=Untouchable())
    make(steps=3).fit(task)


def test_val_selection_keeps_the_best_grid_point_and_equals_a_retrain(enc):
    task = enc["tasks"]["pre_proj"]
    grid = {"lr_grid": [1e-1, 1e-5], "lambda_grid": [0.0, 1.0], "steps": 10}
    method = make(select_on_val=True, **grid)
    info = method.fit(task)
    accs = {}
    for lr in grid["lr_grid"]:
        for lam in grid["lambda_grid"]:
            single = make(lr=lr, lambda_rule="fixed", lambda_value=lam, steps=10)
            single.fit(task)
            accs[(lr, lam)] = prolip_module.accuracy(single.proj, task.val, task.text_weights, task.logit_scale)
            if (lr, lam) == (info["lr"], info["lambda"]):
                assert torch.equal(single.proj.weight, method.proj.weight)
    assert info["val_acc"] == max(accs.values())
    assert (info["lr"], info["lambda"]) == next(k for k, v in accs.items() if v == max(accs.values()))


def test_rn_state_round_trip_keeps_the_frozen_bias(rn50_visual):
    method = make()
    method.proj = Projection.from_visual(rn50_visual)
    restored = make()
    restored.load_state_dict(method.state_dict())
    pre = torch.randn(2, 2048, generator=torch.Generator().manual_seed(1))
    text = torch.nn.functional.normalize(torch.randn(3, 1024, generator=torch.Generator().manual_seed(2)), dim=-1)
    space = _space(3)
    tgt = EvalTarget(space, text, 100.0, space)
    assert "proj.bias" in method.state_dict()
    assert torch.equal(method.predict(pre, tgt), restored.predict(pre, tgt))


def _space(n: int):
    from clipbench.data import LabelSpace

    return LabelSpace("s", tuple(f"c{i}" for i in range(n)), tuple(f"class {i}" for i in range(n)), ("{}.",))


def test_fit_without_a_backbone_is_a_clear_error(enc):
    with pytest.raises(ValueError, match="backbone"):
        make().fit(replace(enc["tasks"]["pre_proj"], backbone=None))


@pytest.mark.parametrize("bad", [{"steps": 0}, {"lambda_rule": "1/K"}, {"lr": -1.0}, {"lambda_grid": []}])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ConfigError):
        parse(ProlipConfig, bad, "method_params.prolip")
