"""CLIP-CITE: trainable parameters, identity at wise_alpha = 0, losses, learning, WiSE-FT interpolation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from finetune_fixtures import check_runtime_is_not_a_method_setting, check_state_round_trip, image_task, maker, target

from clipbench.data import LabelSpace
from clipbench.errors import ConfigError
from clipbench.methods import EvalTarget
from clipbench.methods.clip_cite import (
    ClipCite,
    ClipCiteConfig,
    cosine_lr,
    kl_loss,
    make_student,
    scl_loss,
    training_prompts,
)
from clipbench.methods.training import class_text_features, count_trainable, tokenize_prompts
from clipbench.methods.zeroshot import zero_shot_logits
from clipbench.typed import parse, to_plain

make = maker(ClipCite, epochs=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_task(tmp_path_factory, "clip_cite")


def test_trainable_parameters_vitb16_are_the_whole_model_plus_w():
    import open_clip

    model = open_clip.create_model("ViT-B-16", pretrained=None)
    space = LabelSpace("d", ("a", "b", "c"), ("cat", "dog", "ship"), ("{}.",))
    tokens = tokenize_prompts(
        open_clip.get_tokenizer("ViT-B-16"), training_prompts(ClipCiteConfig(), space), torch.device("cpu")
    )
    with torch.no_grad():
        w = class_text_features(model, tokens, 3)
    assert w.shape == (3, 512)
    total = sum(p.numel() for p in model.parameters())
    assert count_trainable(make_student(model, "")) + w.numel() == total + 3 * 512


def test_fit_trains_every_parameter_and_w(data):
    diagnostics = make().fit(data["tasks"]["images"])
    backbone = data["backbone"].model
    assert diagnostics["trainable_params"] == sum(p.numel() for p in backbone.parameters()) + 4 * 128


def test_frozen_pattern_keeps_those_parameters_out_of_the_state(data):
    method = make(frozen_pattern=r"^token_embedding\.weight$")
    method.fit(data["tasks"]["images"])
    assert not any(k.startswith("model.token_embedding.weight") for k in method.state_dict())
    assert "model.visual.conv1.weight.q8" in method.state_dict()


@pytest.mark.parametrize(
    "overrides",
    [
        {"base_classifier": "text", "prompt_template": None},
        {"base_classifier": "W", "prompt_template": "a photo of a {}."},
        {"base_classifier": "W", "prompt_template": None},
    ],
)
def test_wise_alpha_zero_gives_the_zero_shot_logits(data, overrides):
    method = make(wise_alpha=0.0, lr=1e-3, **overrides)
    method.fit(data["tasks"]["images"])
    logits = method.predictor(target(data))(data["x"]["images"])
    assert torch.allclose(logits, zero_shot_logits(data["x"]["features"], target(data)), atol=1e-4)


def test_the_text_route_scores_the_prompt_template_as_in_training(data):
    """The text recipe of the paper: the text route encodes ``prompt_template``, not the target's templates."""
    method = make(wise_alpha=0.0, lr=1e-3, base_classifier="text", prompt_template="a drawing of a {}.")
    method.fit(data["tasks"]["images"])
    tgt = target(data)
    prompts = [[f"a drawing of a {name.replace('_', ' ')}."] for name in tgt.space.classnames]
    own = replace(tgt, text_weights=data["backbone"].text_classifier(prompts))
    logits = method.predictor(tgt)(data["x"]["images"])
    assert torch.allclose(logits, zero_shot_logits(data["x"]["features"], own), atol=1e-4)
    assert not torch.allclose(logits, zero_shot_logits(data["x"]["features"], tgt), atol=1e-4)


def test_training_lowers_the_loss_and_fits_the_training_images(data):
    task = data["tasks"]["images"]
    x = task.train_images.pixels(range(len(task.train_images)), data["backbone"].preprocess)
    before = F.cross_entropy(zero_shot_logits(data["backbone"].encode_images(x), target(data)), task.train.labels)
    method = make(epochs=10, lr=1e-4, batch_size=8, crop_scale=[0.8, 1.0], wise_alpha=1.0)
    diagnostics = method.fit(task)
    after = F.cross_entropy(method.predictor(target(data))(x), task.train.labels)
    assert diagnostics["final_loss"] < diagnostics["first_epoch_loss"]
    assert after < before


def test_wise_ft_interpolates_every_parameter_halfway(data):
    method = make(lr=1e-3)
    method.fit(data["tasks"]["images"])
    merged = dict(method.tuned_model(target(data)).named_parameters())
    original = dict(data["backbone"].model.named_parameters())
    name = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    tuned = method.checkpoint()[name]  # the unquantised fine-tuned weights
    assert not torch.equal(tuned, original[name])
    step = method.state_dict()[f"model.{name}.scale"][:, None]  # the stored delta's quantisation step per row
    assert ((merged[name] - (tuned + original[name]) / 2).abs() <= step / 4 + 1e-6).all()


def test_unseen_classes_use_the_text_route_and_seen_ones_w(data):
    task = data["tasks"]["images"]
    method = make(lr=1e-3)
    method.fit(task)
    text = make(lr=1e-3, base_classifier="text")
    text.fit(task)
    x = data["x"]["images"]
    assert not torch.allclose(method.predictor(target(data))(x), text.predictor(target(data))(x))
    new = replace(task.space, class_ids=tuple(f"n{i}" for i in range(len(task.space))))
    assert torch.equal(method.predictor(target(data, new))(x), text.predictor(target(data, new))(x))


def test_batch_size_follows_the_dataset(data):
    task = replace(data["tasks"]["images"], dataset="eurosat")
    assert make(batch_size=8).fit(task)["batch_size"] == 16


def test_scl_without_shared_classes_is_the_clip_loss():
    g = torch.Generator().manual_seed(0)
    img, txt = (F.normalize(torch.randn(5, 8, generator=g), dim=-1) for _ in range(2))
    labels = torch.arange(5)
    logits = 10 * img @ txt.T
    clip = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert torch.allclose(scl_loss(img, txt, labels, 10.0).mean(), clip)


def test_scl_masks_other_items_of_the_same_class():
    g = torch.Generator().manual_seed(1)
    img, txt = (F.normalize(torch.randn(3, 8, generator=g), dim=-1) for _ in range(2))
    labels = torch.tensor([0, 0, 1])
    sims = 10 * img @ txt.T
    first_i2t = -sims[0, 0] + torch.logsumexp(sims[0, [0, 2]], 0)  # item 1 shares the class: masked
    first_t2i = -sims[0, 0] + torch.logsumexp(sims[[0, 2], 0], 0)
    assert torch.allclose(scl_loss(img, txt, labels, 10.0)[0], 0.5 * (first_i2t + first_t2i))


def test_kl_directions():
    s, t = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    assert torch.allclose(kl_loss(s, t, "teacher_student"), (log_t.exp() * (log_t - log_s)).sum(-1))
    assert torch.allclose(kl_loss(s, t, "student_teacher"), (log_s.exp() * (log_s - log_t)).sum(-1))
    assert torch.allclose(kl_loss(t, t, "teacher_student"), torch.zeros(1), atol=1e-7)


def test_cosine_schedule_endpoints():
    assert cosine_lr(0, 100, 5e-6, 0) == 5e-6
    assert cosine_lr(50, 100, 5e-6, 0) == pytest.approx(2.5e-6)
    assert cosine_lr(0, 100, 5e-6, 10) == pytest.approx(5e-7)


@pytest.mark.parametrize(
    "bad",
    [
        {"wise_alpha": 1.5},
        {"epochs": 0},
        {"prompt_template": "a photo"},
        {"frozen_pattern": "token_embedding"},
        {"kl_direction": "both"},
        {"by_dataset": {"eurosat": {"batch_size": 0}}},
    ],
)
def test_bad_config_is_rejected(bad):
    with pytest.raises(ConfigError):
        parse(ClipCiteConfig, bad, "test clip_cite")


def test_several_templates_are_ensembled_in_training_and_in_w(data):
    task = data["tasks"]["images"]
    space = replace(task.space, templates=("a photo of a {}.", "a drawing of a {}."))
    text = data["backbone"].text_classifier(space.prompts())
    task = replace(task, space=space, text_weights=text)
    method = make(wise_alpha=0.0, prompt_template=None, vld_texts="batch", lr=1e-3)
    method.fit(task)
    tgt = EvalTarget(space, text, task.logit_scale, space, backbone=data["backbone"])
    logits = method.predictor(tgt)(data["x"]["images"])
    assert torch.allclose(logits, zero_shot_logits(data["x"]["features"], tgt), atol=1e-4)


def test_defaults_are_the_paper_settings():
    cfg = ClipCiteConfig()
    assert (cfg.lambda_scl, cfg.eta_vld, cfg.lr, cfg.epochs, cfg.batch_size) == (0.7, 0.1, 5e-6, 20, 32)
    assert to_plain(cfg.by_dataset) == {"eurosat": {"batch_size": 16}, "imagenet": {"batch_size": 64}}
    assert cfg.wise_alpha == 0.5 and not cfg.flip and cfg.prompt_template == "a photo of a {}"
    assert cfg.frozen_pattern == ""


def test_cosine_is_stepped_every_iteration(data, monkeypatch):
    from clipbench.methods import clip_cite

    seen = []
    monkeypatch.setattr(clip_cite, "set_lr", lambda opt, lr: seen.append(lr))
    make(epochs=2, batch_size=4, lr=1e-3).fit(data["tasks"]["images"])  # 16 images: 4 iterations per epoch
    assert seen == pytest.approx([cosine_lr(i, 8, 1e-3, 0) for i in range(8)])
    assert seen[0] == 1e-3 and seen == sorted(seen, reverse=True)


def test_saved_state_predicts_like_the_fitted_method(data):
    check_state_round_trip(make, data)


def test_device_and_precision_come_from_the_runtime(data):
    check_runtime_is_not_a_method_setting(make, data)


def test_quantised_delta_round_trips_within_half_a_step():
    from clipbench.methods.training import dequantize_rows, quantize_rows

    t = torch.randn(7, 5, 3)
    for bits, levels in ((8, 127), (4, 7)):
        q, scale = quantize_rows(t, bits)
        back = dequantize_rows(q, scale, t.shape)
        assert ((back - t).abs() <= scale.view(-1, 1, 1) / 2 + 1e-7).all()
        assert torch.allclose(scale, t.flatten(1).abs().amax(1) / levels)


def test_vitb16_cell_state_fits_150_mb(tmp_path):
    """A CLIP-CITE cell on random-weight ViT-B/16 (1,000 classes) stores <= 150 MB (fp32 weights: ~600 MB)."""
    import copy

    from clipbench.backbones import import_open_clip
    from clipbench.io import atomic_save_tensors
    from clipbench.methods.clip_cite import ClipCiteConfig
    from clipbench.methods.training import compress_delta

    model = import_open_clip().create_model("ViT-B-16", force_quick_gelu=True)
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(1e-4 * torch.randn_like(p))
    names = [n for n, _ in model.named_parameters()]
    state = compress_delta(tuned, model, names, ClipCiteConfig().low_bit_pattern)
    state.update(W=torch.zeros(1000, 512), W0=torch.zeros(1000, 512))
    path = atomic_save_tensors(tmp_path / "state.safetensors", state)
    assert path.stat().st_size <= 150e6
