"""CoCoOp: parameter count of the reference configuration, zero-shot identity with a silent Meta-Net, training."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_coop import reference_backbone

from clipbench.methods import METHODS, EvalTarget
from clipbench.methods.cocoop import CoCoOpConfig
from clipbench.methods.training import count_trainable
from clipbench.methods.zeroshot import zero_shot_logits
from clipbench.typed import parse

from conftest import encoder_task


def make(**overrides):
    return METHODS.get("cocoop")(parse(CoCoOpConfig, overrides, "test cocoop"))


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return encoder_task(tmp_path_factory.mktemp("cocoop_task"))


def _target(enc):
    task = enc["tasks"]["features"]
    return EvalTarget(task.space, task.text_weights, task.logit_scale, task.space, backbone=enc["backbone"])


def test_trainable_parameter_count_vitb16(enc):
    task = replace(enc["tasks"]["features"], backbone=reference_backbone("ViT-B-16"))
    prompt = make().build_prompt(task)
    assert count_trainable(prompt) == 35_360  # 4x512 ctx + Meta-Net 512->32->512 with biases (spec)
    assert count_trainable(prompt.meta_net) == 33_312


def test_silent_meta_net_reproduces_zero_shot(enc):
    """With the Meta-Net's output layer zeroed the context is "a photo of a" for every image."""
    method = make()
    method.prompt = method.build_prompt(enc["tasks"]["features"])
    with torch.no_grad():
        method.prompt.meta_net[2].weight.zero_()
        method.prompt.meta_net[2].bias.zero_()
    target, x = _target(enc), enc["x"]["features"]
    assert torch.allclose(method.predictor(target)(x), zero_shot_logits(x, target), atol=1e-4, rtol=0)


def test_chunked_prediction_equals_one_batch(enc):
    method = make(epochs=2)
    method.fit(enc["tasks"]["features"])
    x = enc["x"]["features"]
    whole = method.predictor(_target(enc))(x)
    method.config = replace(method.config, predict_chunk=1)  # one image per text-encoder call
    assert torch.allclose(method.predictor(_target(enc))(x), whole, atol=1e-5)


def test_training_lowers_the_loss_and_moves_both_parts(enc):
    task = enc["tasks"]["features"]
    first = make(epochs=1)
    first_loss = first.fit(task)["final_loss"]
    later = make(epochs=12)
    assert later.fit(task)["final_loss"] < first_loss
    init = make().build_prompt(task)
    assert not torch.equal(later.prompt.ctx, init.ctx)
    assert not torch.equal(later.prompt.meta_net[0].weight, init.meta_net[0].weight)
