"""A prepared backbone that is missing, corrupt, pickled, modified or of another architecture ends in a one-line
DataError naming the file and the fix, and the cheap checks run before any model is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from clipbench.backbones import BackboneSpec, get_backbone, import_open_clip, load_backbone, prepare_backbone
from clipbench.backbones import spec as spec_module
from clipbench.backbones.spec import MANIFEST, checkpoint_path, save_prepared, sha256_file
from clipbench.errors import DataError

TOY = get_backbone("toy_vit")


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, torch.nn.Module]:
    """Random-init toy_vit plus two other tiny architectures (narrower; one image layer fewer)."""
    open_clip = import_open_clip()
    config = json.loads((Path(spec_module.__file__).parent / "model_configs" / "clipbench-toy-vit.json").read_text())
    narrow = {
        **config,
        "vision_cfg": {**config["vision_cfg"], "width": 64},
        "text_cfg": {**config["text_cfg"], "width": 64},
    }
    shallow = {**config, "vision_cfg": {**config["vision_cfg"], "layers": 2}}
    configs = tmp_path_factory.mktemp("model_configs")
    for name, cfg in (("narrow", narrow), ("shallow", shallow)):
        (configs / f"clipbench-test-{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(configs)
    torch.manual_seed(0)
    return {
        name: open_clip.create_model(model).eval()
        for name, model in (
            ("toy", TOY.model),
            ("narrow", "clipbench-test-narrow"),
            ("shallow", "clipbench-test-shallow"),
        )
    }


@pytest.fixture
def prepared(tmp_path, variants) -> Path:
    directory = tmp_path / "toy_vit"
    save_prepared(TOY, variants["toy"], directory, {})
    return directory


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if open_clip is asked for a model (the check must come before that)."""

    def refuse():
        raise AssertionError("open_clip was reached before the checkpoint check")

    monkeypatch.setattr(spec_module, "import_open_clip", refuse)


def failure(directory: Path, named: Path | None = None, delete: bool = True) -> str:
    """Load ``directory`` expecting a DataError; check it names the file and the fix on one line."""
    with pytest.raises(DataError) as err:
        load_backbone("toy_vit", directory)
    message = str(err.value)
    fix = f"delete {directory} and run `dvc repro backbone@toy_vit`" if delete else "run `dvc repro backbone@toy_vit`"
    assert str(named or checkpoint_path(directory)) in message
    assert message.endswith(fix) and "\n" not in message
    return message


def rewrite_manifest(directory: Path, **changes) -> None:
    path = directory / MANIFEST
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_an_intact_checkpoint_loads_with_its_recorded_sha(prepared):
    backbone = load_backbone("toy_vit", prepared)
    assert backbone.sha256 == json.loads((prepared / MANIFEST).read_text())["sha256"]


def test_missing_checkpoint(prepared, no_model):
    checkpoint_path(prepared).unlink()
    assert "is missing" in failure(prepared)


def test_missing_directory_asks_only_for_the_stage(tmp_path, no_model):
    assert "is missing" in failure(tmp_path / "absent", delete=False)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", "does not match the sha256"),  # the header still parses; the record catches it
        ("empty", "not a valid safetensors file"),
        ("text", "not a valid safetensors file"),
    ],
)
def test_corrupt_checkpoint(prepared, no_model, damage, expected):
    path = checkpoint_path(prepared)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "text": b"version https://git-lfs\n"}[damage])
    assert expected in failure(prepared)


def test_a_modified_tensor_byte_fails_the_sha256(prepared, no_model):
    """A flipped byte in the tensor data still parses as safetensors (open_clip would load it silently)."""
    path = checkpoint_path(prepared)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "does not match the sha256" in failure(prepared)


@pytest.mark.parametrize("zipped", [True, False], ids=["torch.save", "legacy-pickle"])
def test_a_pickled_checkpoint_is_refused(prepared, variants, no_model, zipped):
    path = checkpoint_path(prepared)
    torch.save(variants["toy"].state_dict(), path, _use_new_zipfile_serialization=zipped)
    rewrite_manifest(prepared, sha256=sha256_file(path))  # even with a matching record
    message = failure(prepared)
    assert "pickle" in message and "only loads safetensors" in message


@pytest.mark.parametrize("variant", ["narrow", "shallow"])
def test_weights_of_another_architecture(prepared, variants, variant):
    """Recorded as toy_vit with a matching sha256, but the tensors do not fit (open_clip raises AssertionError
    for the width and RuntimeError for the missing layer: both become DataError)."""
    save_prepared(TOY, variants[variant], prepared, {})
    assert f"does not load as {TOY.model}" in failure(prepared)


def test_a_checkpoint_recorded_for_another_architecture(prepared, variants, no_model):
    other = BackboneSpec("toy_vit", "clipbench-test-narrow", "toy", source="toy")
    save_prepared(other, variants["narrow"], prepared, {})
    assert "was prepared as clipbench-test-narrow" in failure(prepared)


def test_a_header_safetensors_rejects_is_a_data_error(prepared):
    """safetensors' own error is no RuntimeError; it must still become a DataError."""
    path = checkpoint_path(prepared)
    header = b"{not json}"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    rewrite_manifest(prepared, sha256=sha256_file(path))
    with pytest.raises(DataError) as err:
        load_backbone("toy_vit", prepared)
    assert isinstance(err.value.__cause__, SafetensorError) and not isinstance(err.value.__cause__, RuntimeError)
    assert str(path) in str(err.value) and "dvc repro backbone@toy_vit" in str(err.value)


@pytest.mark.parametrize("manifest", [None, "{truncated", json.dumps({"model": TOY.model})])
def test_a_missing_or_unusable_manifest(prepared, no_model, manifest):
    path = prepared / MANIFEST
    if manifest is None:
        path.unlink()
    else:
        path.write_text(manifest)
    failure(prepared, named=path)


def test_a_failed_hub_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': no network")

    monkeypatch.setattr(import_open_clip(), "create_model", offline)
    with pytest.raises(
        DataError,
        match=r"vitb16_openai: open_clip cannot fetch ViT-B-16 'openai' .*"
        r"`dvc repro backbone@vitb16_openai`$",
    ):
        prepare_backbone(get_backbone("vitb16_openai"), tmp_path / "bb")
    assert not (tmp_path / "bb").exists()


def test_an_unchanged_checkpoint_is_hashed_once_per_process_and_a_changed_one_again(prepared, monkeypatch):
    """A train stage verifies the checkpoint for its keys and again when it loads the model: one hash."""
    hashed = []
    real = spec_module.sha256_file
    monkeypatch.setattr(spec_module, "sha256_file", lambda p: hashed.append(p) or real(p))
    spec_module._checkpoint_sha.cache_clear()
    first = spec_module.verify_checkpoint(TOY, prepared)
    assert spec_module.verify_checkpoint(TOY, prepared) == first and len(hashed) == 1
    path = checkpoint_path(prepared)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new mtime: hashed again and refused
    with pytest.raises(DataError, match="does not match the sha256"):
        spec_module.verify_checkpoint(TOY, prepared)
    assert len(hashed) == 2
