"""Zero-shot prompt ensemble (CoOp ZeroshotCLIP2): template choice and normalise-average-normalise."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from clipbench.methods import METHODS, EvalTarget
from clipbench.methods.zeroshot_ensemble import IMAGENET_TEMPLATES_SELECT, ZeroShotEnsembleConfig, ensemble_templates
from clipbench.typed import parse

from conftest import encoder_task


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return encoder_task(tmp_path_factory.mktemp("zs_task"))


def test_seven_templates_plus_the_dataset_template_outside_imagenet(enc):
    cfg = ZeroShotEnsembleConfig()
    space = enc["space"]
    assert len(IMAGENET_TEMPLATES_SELECT) == 7
    assert ensemble_templates(space, cfg) == (*IMAGENET_TEMPLATES_SELECT, "a photo of a {}.")
    assert ensemble_templates(replace(space, dataset="imagenet"), cfg) == IMAGENET_TEMPLATES_SELECT
    assert ensemble_templates(replace(space, templates=("art of the {}.",)), cfg) == IMAGENET_TEMPLATES_SELECT
    assert ensemble_templates(space, replace(cfg, add_dataset_templates=False)) == IMAGENET_TEMPLATES_SELECT


def test_logits_use_the_normalised_mean_of_normalised_prompt_features(enc):
    task, backbone = enc["tasks"]["features"], enc["backbone"]
    method = METHODS.get("zeroshot_ensemble")(parse(ZeroShotEnsembleConfig, {}, "t"))
    target = EvalTarget(task.space, task.text_weights, task.logit_scale, task.space, backbone=backbone)
    x = enc["x"]["features"]
    with torch.no_grad():
        rows = []
        for name in task.space.classnames:
            texts = [t.format(name) for t in (*IMAGENET_TEMPLATES_SELECT, "a photo of a {}.")]
            rows.append(
                F.normalize(F.normalize(backbone.model.encode_text(backbone.tokenizer(texts)), dim=-1).mean(0), dim=-1)
            )
    expected = task.logit_scale * F.normalize(x, dim=-1) @ torch.stack(rows).T
    assert torch.allclose(method.predictor(target)(x), expected, atol=1e-5)
    assert not torch.allclose(
        method.predictor(target)(x), task.logit_scale * F.normalize(x, dim=-1) @ task.text_weights.T, atol=1e-3
    )  # differs from the single-template classifier
