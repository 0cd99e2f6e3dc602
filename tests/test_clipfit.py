"""ClipFit: exact trainable parameters on the real architectures, identity before training, learning, lambda rule."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from finetune_fixtures import check_runtime_is_not_a_method_setting, check_state_round_trip, image_task, maker, target

from clipbench.errors import ConfigError
from clipbench.methods import EvalTarget, resolve_config
from clipbench.methods.clipfit import ClipFit, ClipFitConfig, clipfit_lambda
from clipbench.methods.training import freeze_except
from clipbench.methods.zeroshot import zero_shot_logits
from clipbench.typed import parse, to_plain

make = maker(ClipFit)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_task(tmp_path_factory, "clipfit")


def selected(arch: str) -> dict[str, int]:
    import open_clip

    model = open_clip.create_model(arch, pretrained=None)
    cfg = ClipFitConfig()
    text = freeze_except(model, [cfg.text_pattern])
    image = freeze_except(model, [cfg.image_pattern])
    params = dict(model.named_parameters())
    return {
        "text": sum(params[n].numel() for n in text),
        "image": sum(params[n].numel() for n in image),
        "text_tensors": len(text),
        "image_tensors": len(image),
    }


def test_trainable_parameters_vitb16():
    counts = selected("ViT-B-16")
    assert counts["text"] == 6_144 and counts["text_tensors"] == 12  # 12 x 512 FFN c_proj biases
    assert counts["image"] == 39_936 and counts["image_tensors"] == 52  # 26 LayerNorms x (weight, bias) x 768
    assert counts["text"] + counts["image"] == 46_080


def test_trainable_parameters_rn50_are_the_text_biases_only():
    counts = selected("RN50")
    assert counts == {"text": 6_144, "image": 0, "text_tensors": 12, "image_tensors": 0}


def test_fit_trains_exactly_the_selected_tensors(data):
    method = make(epochs=1)
    diagnostics = method.fit(data["tasks"]["images"])
    width, layers = 96, 3  # clipbench-toy-vit: text and image width 96, 3 blocks each
    assert diagnostics["trainable_params"] == layers * width + (2 + 2 * layers) * 2 * width
    assert all(n.endswith("mlp.c_proj.bias") or ".ln_" in n for n in method.state_dict())


def test_before_any_update_clipfit_is_zero_shot(data):
    method = make(epochs=1, lr=0.0, warmup_lr=0.0)
    diagnostics = method.fit(data["tasks"]["images"])
    assert diagnostics["final_text_reg"] < 1e-6
    logits = method.predictor(target(data))(data["x"]["images"])
    expected = zero_shot_logits(data["x"]["features"], target(data))
    assert torch.allclose(logits, expected, atol=1e-4)


def test_training_lowers_the_training_loss(data):
    task = data["tasks"]["images"]
    x = task.train_images.pixels(range(len(task.train_images)), data["backbone"].preprocess)
    before = F.cross_entropy(zero_shot_logits(data["backbone"].encode_images(x), target(data)), task.train.labels)
    method = make(epochs=12, lr=0.05, batch_size=8, crop_scale=[0.8, 1.0], lam=0.0)
    diagnostics = method.fit(task)
    after = F.cross_entropy(method.predictor(target(data))(x), task.train.labels)
    assert diagnostics["final_loss"] < diagnostics["first_epoch_loss"]
    assert after < before


def test_new_classes_use_the_tuned_text_encoder(data):
    method = make(epochs=2)
    method.fit(data["tasks"]["images"])
    task = data["tasks"]["images"]
    new = replace(task.space, class_ids=("n0", "n1"), classnames=("zebra", "kettle"))
    tgt = EvalTarget(new, task.text_weights[:2], task.logit_scale, task.space, backbone=data["backbone"])
    assert method.predictor(tgt)(data["x"]["images"]).shape == (len(data["labels"]), 2)


def test_epochs_follow_the_dataset(data):
    task = replace(data["tasks"]["images"], dataset="food101")
    info = make(epochs=3, by_dataset={"food101": {"epochs": 1, "lambda_few_shot": 0.5}}).fit(task)
    assert (info["epochs"], info["lambda"]) == (1, 0.5)


def test_lambda_rule_follows_the_readme():
    def rule(dataset: str, subset: str, lam: float | None = None) -> float:
        return clipfit_lambda(resolve_config(ClipFitConfig(lam=lam), dataset), subset)

    assert rule("dtd", "all") == 8 and rule("sun397", "all") == 8
    assert rule("caltech101", "all") == 2 and rule("imagenet", "all") == 2
    assert rule("caltech101", "base") == 8 and rule("dtd", "base") == 8
    assert rule("dtd", "base", lam=0.5) == 0.5 and rule("dtd", "all", lam=0.5) == 0.5


@pytest.mark.parametrize(
    "bad",
    [
        {"text_pattern": "c_proj.bias"},
        {"lambda_few_shot": -1},
        {"epochs": 0},
        {"crop_scale": [0.5, 0.2]},
        {"by_dataset": {"imagenet": {"epochs": 0}}},
        {"lambda_transfer": 8.0},
    ],
)
def test_bad_config_is_rejected(bad):
    with pytest.raises(ConfigError):
        parse(ClipFitConfig, bad, "test clipfit")


def test_several_templates_are_ensembled(data):
    task = data["tasks"]["images"]
    space = replace(task.space, templates=("a photo of a {}.", "a drawing of a {}."))
    text = data["backbone"].text_classifier(space.prompts())
    method = make(epochs=1, lr=0.0, warmup_lr=0.0)
    method.fit(replace(task, space=space, text_weights=text))
    tgt = EvalTarget(space, text, task.logit_scale, space, backbone=data["backbone"])
    logits = method.predictor(tgt)(data["x"]["images"])
    assert torch.allclose(logits, zero_shot_logits(data["x"]["features"], tgt), atol=1e-4)


def test_defaults_are_the_reference_settings():
    cfg = ClipFitConfig()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.warmup_lr, cfg.batch_size) == (2e-3, 0.9, 5e-4, 1e-5, 32)
    assert cfg.epochs == 100 and cfg.crop_scale == (0.08, 1.0) and cfg.flip
    assert (cfg.lambda_base2new, cfg.lambda_few_shot) == (8.0, 2.0)
    assert to_plain(cfg.by_dataset) == {
        "imagenet": {"epochs": 10},
        "food101": {"epochs": 10},
        "dtd": {"lambda_few_shot": 8.0},
        "sun397": {"lambda_few_shot": 8.0},
    }


def test_learning_rate_follows_the_dassl_schedule(data, monkeypatch):
    from clipbench.methods import clipfit

    seen = []
    monkeypatch.setattr(clipfit, "set_lr", lambda opt, lr: seen.append(lr))
    make(epochs=3).fit(data["tasks"]["images"])
    assert seen == pytest.approx([1e-5, 2e-3, 2e-3 * 0.5 * (1 + math.cos(math.pi / 3))])


def test_saved_state_predicts_like_the_fitted_method(data):
    check_state_round_trip(make, data)


def test_device_and_precision_come_from_the_runtime(data):
    check_runtime_is_not_a_method_setting(make, data)
