"""Contract tests run over every registered method, plus method-specific identities."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from clipbench.errors import NotApplicable
from clipbench.methods import METHODS, EvalTarget, FitTask, Inputs
from clipbench.methods.base import fit_counted
from clipbench.methods.zeroshot import zero_shot_logits
from clipbench.typed import parse

from conftest import encoder_task, synthetic_task


def make(name: str, **overrides):
    """``name`` at its tiny-run settings (``Method.smoke``) plus ``overrides``."""
    cls = METHODS.get(name)
    return cls(parse(cls.Config, {**cls.smoke, **overrides}, f"test {name}"))


def target_of(task, labels=None, backbone=None):
    labels = list(range(len(task.space))) if labels is None else labels
    return EvalTarget(
        task.space.subset(tuple(labels)), task.text_weights[labels], task.logit_scale, task.space, backbone=backbone
    )


@dataclass
class Case:
    """A method's task and its evaluation inputs: a separable feature task for feature-only methods, a tiny
    random-init backbone with rendered images for methods that use the encoders."""

    task: FitTask
    x: torch.Tensor
    labels: torch.Tensor
    backbone: object | None
    separable: bool

    def target(self, labels=None) -> EvalTarget:
        return target_of(self.task, labels, self.backbone)


@pytest.fixture(scope="module")
def encoder_case_data(tmp_path_factory):
    return encoder_task(tmp_path_factory.mktemp("encoder_task"))


@pytest.fixture
def case(request, encoder_case_data):
    def build(name: str) -> Case:
        cls = METHODS.get(name)
        if not cls.needs_backbone() and cls.requires is Inputs.FEATURES:
            task = synthetic_task()
            return Case(task, task.val.plain, task.val.labels, None, True)
        kind = cls.requires.value
        return Case(
            encoder_case_data["tasks"][kind],
            encoder_case_data["x"][kind],
            encoder_case_data["labels"],
            encoder_case_data["backbone"],
            False,
        )

    return build


@pytest.mark.parametrize("name", METHODS.names())
def test_fit_predict_shapes_and_accuracy(name, case):
    c = case(name)
    method = make(name)
    diagnostics = method.fit(c.task)
    assert isinstance(diagnostics, dict)
    logits = method.predictor(c.target())(c.x)
    assert logits.shape == (len(c.labels), len(c.task.space))
    assert torch.isfinite(logits).all()
    if c.separable:
        acc = (logits.argmax(1) == c.labels).float().mean().item()
        assert acc > 1.5 / len(c.task.space), f"{name} is at chance on a separable task ({acc:.2f})"


@pytest.mark.parametrize("name", METHODS.names())
def test_state_round_trip_gives_identical_logits(name, case):
    c = case(name)
    method = make(name)
    method.fit(c.task)
    restored = make(name)
    restored.load_state_dict({k: v.clone() for k, v in method.state_dict().items()})
    assert torch.equal(method.predictor(c.target())(c.x), restored.predictor(c.target())(c.x))


@pytest.mark.parametrize("name", METHODS.names())
def test_same_seed_same_result(name, case):
    runs = []
    for _ in range(2):
        c = case(name)
        method = make(name)
        method.fit(c.task)
        runs.append(method.predictor(c.target())(c.x))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", METHODS.names())
def test_fit_does_not_modify_the_backbone(name, case):
    c = case(name)
    if c.backbone is None:
        pytest.skip("feature-only method")
    before = {k: v.clone() for k, v in c.backbone.model.state_dict().items()}
    make(name).fit(c.task)
    after = c.backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed the shared backbone"


@pytest.mark.parametrize("name", METHODS.names())
def test_unseen_classes_follow_class_specific_flag(name, case):
    c = case(name)
    method = make(name)
    method.fit(c.task)
    other = replace(c.task.space, class_ids=tuple(f"new{i}" for i in range(len(c.task.space))))
    target = EvalTarget(other, c.task.text_weights, c.task.logit_scale, c.task.space, backbone=c.backbone)
    if METHODS.get(name).class_specific:
        with pytest.raises(NotApplicable):
            method.predictor(target)(c.x)
    else:
        assert method.predictor(target)(c.x).shape == (len(c.labels), len(other))


@pytest.mark.parametrize("name", METHODS.names())
def test_predicts_on_a_subset_of_the_training_classes(name, case):
    c = case(name)
    method = make(name)
    method.fit(c.task)
    assert method.predictor(c.target([1, 3]))(c.x).shape == (len(c.labels), 2)


def test_zero_shot_is_scaled_cosine():
    task = synthetic_task()
    x = task.val.plain
    expected = task.logit_scale * torch.nn.functional.normalize(x, dim=-1) @ task.text_weights.T
    assert torch.allclose(make("zeroshot").predict(x, target_of(task)), expected)


def test_linear_probe_c_search_follows_coarse_grid_then_bisection(monkeypatch):
    """With a unimodal validation curve peaked at log10(C) = 0.37 the search lands near the peak."""
    method = make("linear_probe", bisection_steps=8)
    seen = []

    def fake_val_acc(c, task):
        seen.append(c)
        return -abs(__import__("math").log10(c) - 0.37)

    monkeypatch.setattr(method, "_val_acc", fake_val_acc)
    chosen = method.search_c(synthetic_task())
    assert seen[:7] == list(method.config.coarse_grid)
    assert abs(__import__("math").log10(chosen) - 0.37) < 0.1
    assert len(seen) == 7 + 2 * 8


def test_tip_adapter_with_alpha_zero_equals_zero_shot():
    task = synthetic_task()
    method = make("tip_adapter")
    method.fit(task)
    method.alpha = 0.0
    target = target_of(task)
    assert torch.allclose(method.predict(task.val.plain, target), zero_shot_logits(task.val.plain, target), atol=1e-5)


def test_tip_adapter_search_uses_the_reference_grid():
    from clipbench.methods import tip_adapter

    task = synthetic_task()
    method = make("tip_adapter", search_steps=[4, 2], search_scale=[2.1, 1.1])
    method.fit(task)
    assert method.alpha in (0.1, 0.6) and method.beta in (0.1, 0.6, 1.1, 1.6)
    grid_best = tip_adapter.search_alpha_beta(
        torch.nn.functional.normalize(task.val.plain, dim=-1),
        task.val.labels,
        method.keys,
        method.values,
        task.text_weights,
        task.logit_scale,
        (2.1, 1.1),
        (4, 2),
    )
    assert (method.alpha, method.beta) == grid_best[:2]


def test_tip_adapter_f_trains_exactly_the_cache_keys():
    task = synthetic_task(n_classes=5, shots=4, dim=16)
    method = make("tip_adapter_f", epochs=3, search_steps=[4, 2])
    initial = make("tip_adapter", search_steps=[4, 2])
    initial.fit(task)
    method.fit(task)
    assert method.keys.shape == (5 * 4, 16)  # N*K x D trainable scalars (spec formula)
    assert not torch.equal(method.keys, initial.keys)
    assert torch.equal(method.values, initial.values)


@pytest.mark.parametrize("name", METHODS.names())
def test_training_invariants_are_exact_counts_and_repeat(name, case):
    """Every method reports integer `steps` and `trainable_params` (0 together when nothing is optimised), and the
    same seed gives the same diagnostics bit for bit (they are gated exactly by `clipbench check`)."""
    runs = [fit_counted(make(name), case(name).task) for _ in range(2)]
    assert runs[0] == runs[1]
    steps, params = runs[0]["steps"], runs[0]["trainable_params"]
    assert type(steps) is int and type(params) is int
    assert (steps > 0) == (params > 0), runs[0]
