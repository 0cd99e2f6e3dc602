"""CoOp: parameter counts of the reference configurations, the zero-shot identity at init, prompt layouts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clipbench.errors import ConfigError, NotApplicable
from clipbench.methods import METHODS, EvalTarget
from clipbench.methods.coop import CoOpConfig
from clipbench.methods.prompting import PromptBuffers
from clipbench.methods.training import count_trainable
from clipbench.methods.zeroshot import zero_shot_logits
from clipbench.typed import parse

from conftest import encoder_task


def make(**overrides):
    return METHODS.get("coop")(parse(CoOpConfig, overrides, "test coop"))


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return encoder_task(tmp_path_factory.mktemp("coop_task"))


def reference_backbone(arch: str):
    import open_clip

    from clipbench.backbones.spec import Backbone, BackboneSpec

    model = open_clip.create_model(arch, pretrained=None)
    return Backbone(BackboneSpec(arch, arch, "none"), model.eval(), None, open_clip.get_tokenizer(arch), "random")


@pytest.mark.parametrize("arch", ["ViT-B-16", "RN50"])
def test_trainable_parameter_counts_match_the_spec(arch, enc):
    task = replace(enc["tasks"]["features"], backbone=reference_backbone(arch))
    for overrides, expected in (({}, 8_192), ({"ctx_init": "a photo of a"}, 2_048)):
        ctx, prompts = make(**overrides).prompt_parameters(task)
        assert ctx.numel() == expected
        assert count_trainable(prompts) == 0  # prefix/suffix are buffers
    ctx, _ = make(csc=True).prompt_parameters(task)
    assert ctx.numel() == len(task.space) * 16 * 512  # C x M x 512


def _target(enc, backbone=None):
    task = enc["tasks"]["features"]
    return EvalTarget(task.space, task.text_weights, task.logit_scale, task.space, backbone=backbone or enc["backbone"])


@pytest.mark.parametrize("trim", [False, True])
def test_context_initialised_from_a_photo_of_a_equals_zero_shot(trim, enc):
    """Before any update (lr 0) the learned prompt reproduces the template "a photo of a {}."."""
    task, backbone = enc["tasks"]["features"], enc["backbone"]
    assert task.space.templates == ("a photo of a {}.",)
    method = make(ctx_init="a photo of a", epochs=1, lr=0.0, warmup_lr=0.0, trim_prompts=trim)
    method.fit(task)
    target = _target(enc)
    text = method.text_features(target)
    with torch.no_grad():
        reference = backbone.model.encode_text(backbone.tokenizer([p[0] for p in task.space.prompts()]))
    if trim:
        assert torch.allclose(text, reference, atol=1e-5, rtol=0)
    else:
        assert torch.equal(text, reference)
    x = enc["x"]["features"]
    assert torch.allclose(method.predictor(target)(x), zero_shot_logits(x, target), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("position", "template"), [("middle", "a photo {} of a."), ("front", "{} a photo of a.")])
def test_class_token_positions_place_the_name_inside_the_context(position, template, enc):
    backbone = enc["backbone"]
    names = enc["space"].classnames
    ctx, _ = make(ctx_init="a photo of a").prompt_parameters(enc["tasks"]["features"])
    prompts = PromptBuffers(backbone, names, 4, position)
    ids = backbone.tokenizer([template.format(n) for n in names])
    with torch.no_grad():
        expected = backbone.model.token_embedding(ids)
        assert torch.equal(prompts.assemble(ctx.detach()), expected)
    assert torch.equal(prompts.eot, ids.argmax(-1))


def test_training_lowers_the_loss(enc):
    task = enc["tasks"]["features"]
    first = make(n_ctx=4, epochs=1).fit(task)["final_loss"]  # the warm-up epoch barely moves the context
    later = make(n_ctx=4, epochs=30).fit(task)["final_loss"]
    assert later < first


def test_class_specific_context_maps_by_class_id_and_refuses_unseen_classes(enc):
    task = enc["tasks"]["features"]
    method = make(n_ctx=4, epochs=2, csc=True)
    method.fit(task)
    full = method.predictor(_target(enc))(enc["x"]["features"])
    sub = EvalTarget(
        task.space.subset((2, 0)), task.text_weights[[2, 0]], task.logit_scale, task.space, backbone=enc["backbone"]
    )
    assert torch.allclose(method.predictor(sub)(enc["x"]["features"]), full[:, [2, 0]], atol=1e-5)
    other = replace(task.space, class_ids=tuple(f"new{i}" for i in range(len(task.space))))
    with pytest.raises(NotApplicable):
        method.predictor(EvalTarget(other, task.text_weights, task.logit_scale, task.space, backbone=enc["backbone"]))


def test_epoch_rule_follows_shots_and_dataset():
    cfg = CoOpConfig()
    assert [cfg.epochs_for("oxford_pets", k) for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert [cfg.epochs_for("imagenet", k) for k in (1, 16)] == [50, 50]
    assert cfg.epochs_for("oxford_pets", 3) == 100  # the largest listed shot count <= K
    assert parse(CoOpConfig, {"epochs": 7}, "t").epochs_for("imagenet", 16) == 7


def test_a_prompt_longer_than_the_text_encoder_is_a_clear_error(enc):
    with pytest.raises(ConfigError, match="tokens but the text encoder holds 16"):
        make(n_ctx=16).fit(enc["tasks"]["features"])  # the toy text encoder holds 16 tokens


def test_bad_config_values_are_rejected():
    for bad in (
        {"n_ctx": 0},
        {"epochs": 0},
        {"ctx_init": " "},
        {"class_token_position": "left"},
        {"epochs_by_shots": [[1, 0]]},
    ):
        with pytest.raises(ConfigError):
            parse(CoOpConfig, bad, "test coop")


def test_shared_prefix_encoding_equals_full_prompts(enc):
    from clipbench.methods.prompting import TextTower, encode_per_image

    backbone = enc["backbone"]
    prompts = PromptBuffers(backbone, enc["space"].classnames, 4, "end")
    full_tower = TextTower(backbone.model, copy_weights=False, trim=False)
    tower = TextTower(backbone.model, copy_weights=False)
    assert tower.can_share_prefix and not full_tower.can_share_prefix
    ctx = torch.randn(3, 4, backbone.model.token_embedding.weight.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        shared = encode_per_image(tower, prompts, ctx)
        full = torch.stack([full_tower(prompts.assemble(c), prompts.eot) for c in ctx])
    assert shared.shape == full.shape == (3, len(prompts), backbone.embed_dim)
    assert torch.allclose(shared, full, atol=1e-5, rtol=0)


def test_toy_suite_prompts_fit_the_toy_text_encoder():
    """The params.yaml overrides give prompts that fit the 16-token toy text encoder for every toy class."""
    from clipbench.backbones import import_open_clip
    from clipbench.config import load_suite
    from clipbench.data.toy import suite
    from clipbench.methods.prompting import PLACEHOLDER, tokenize_checked

    cfg = load_suite(Path(__file__).resolve().parents[1] / "params.yaml")
    if cfg.suite != "toy":
        pytest.skip("params.yaml selects another suite")
    tokenizer = import_open_clip().get_tokenizer("clipbench-toy-vit")
    names = [c.classname for d in (*cfg.datasets, *cfg.targets) for c in suite.TOY_DATASETS[d].classes]
    for method in ("coop", "cocoop"):
        mc = cfg.method_config(method)
        n_ctx = len(tokenizer.encode(mc.ctx_init)) if mc.ctx_init else mc.n_ctx
        tokenize_checked(tokenizer, [" ".join([PLACEHOLDER] * n_ctx + [n]) + "." for n in names], 16)


@pytest.mark.parametrize("position", ["end", "middle"])
@pytest.mark.parametrize("csc", [False, True])
def test_inference_text_passes_are_bounded_and_equal_one_pass(enc, position, csc):
    """CoOp's evaluation encodes the classes in passes of at most ``per_pass`` (ImageNet: 1,000 in 4 passes)."""
    from clipbench.methods.prompting import TextTower, encode_classes, encode_context

    backbone = enc["backbone"]
    names = ("red circle", "blue square", "green triangle with stripes", "yellow star", "grey ring")
    prompts = PromptBuffers(backbone, names, 4, position)
    width = backbone.model.token_embedding.weight.shape[1]
    ctx = torch.randn(len(names), 4, width) if csc else torch.randn(4, width)
    tower = TextTower(backbone.model, copy_weights=False)
    seen, shared = [], tower.encode_shared_prefix

    def record_shared(prefix, suffix, eot, length=None):
        seen.append(suffix.shape[0])
        return shared(prefix, suffix, eot, length)

    tower.encode_shared_prefix = record_shared  # the generic end-position path of encode_context
    tower.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    with torch.no_grad():
        whole = encode_context(tower, prompts, ctx)
        seen.clear()
        parts = encode_classes(tower, prompts, ctx, per_pass=2)
    assert parts.shape == whole.shape == (5, backbone.embed_dim)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)
    assert seen == [2, 2, 1]  # classes per text-encoder pass
