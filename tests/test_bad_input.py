"""The bad-input catalogue: every case ends in a clear error before heavy work and leaves no partial output.

Each case builds one broken input in a fresh project, calls the entry point a user reaches first (the suite
loader every stage starts with, or the stage itself), and checks three things: the exception type, that the
message names the offending file, key or value together with the fix, and that the project's output folders
hold nothing new afterwards (no index, manifest or temporary sibling). Cases whose input must simply work
(grayscale, CMYK, RGBA, 16-bit images) and the documented short-class behaviour close the file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from clipbench.backbones import get_backbone
from clipbench.backbones.registry import import_open_clip
from clipbench.backbones.spec import CHECKPOINT, load_backbone, save_prepared
from clipbench.config import SuiteConfig, load_suite
from clipbench.data import get_dataset
from clipbench.data.base import Record
from clipbench.data.images import open_rgb
from clipbench.data.index import DatasetIndex, load_index
from clipbench.data.integrity import check_images
from clipbench.data.kshot import read_manifest
from clipbench.errors import ClipbenchError, ConfigError, DataError
from clipbench.features import load_text
from clipbench.io import atomic_save_tensors
from clipbench.layout import Layout
from clipbench.pipeline import download, split
from clipbench.typed import parse

from conftest import tiny_params
from coop_fixtures import write_imagenet_family, write_split_json_dataset

DTD_SPLIT = "dtd/split_zhou_DescribableTextures.json"


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coop")
    write_split_json_dataset(root, "dtd")
    return root


@dataclass
class Project:
    """A scratch project: ``data`` (a copy of the miniature DTD) and the output ``layout``."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def layout(self) -> Layout:
        return Layout(self.root / "project")

    def outputs(self) -> set[str]:
        base = self.layout.root
        return {str(p.relative_to(base)) for p in base.rglob("*")} if base.exists() else set()


@pytest.fixture
def proj(coop_root, tmp_path) -> Project:
    p = Project(tmp_path)
    shutil.copytree(get_dataset("dtd").root(coop_root), get_dataset("dtd").root(p.data))
    return p


# --- how each case breaks its input --------------------------------------------------------------------------------


def _params(p: Project, **changes) -> Path:
    params = tiny_params(data_root=str(p.data))
    for dotted, value in changes.items():
        node, *path, leaf = [params, *dotted.split(".")]
        for key in path:
            node = node[key]
        node[leaf] = value
    path = p.root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _edit_split(p: Project, edit: Callable[[dict], None]) -> None:
    path = p.data / DTD_SPLIT
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def _image_of(p: Project, split_name: str = "train", i: int = 0) -> Path:
    rel = json.loads((p.data / DTD_SPLIT).read_text())[split_name][i][0]
    return p.data / "dtd" / "images" / rel


def _jpeg(size: int = 64) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _png(size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _symlink_out(p: Project) -> None:
    outside = p.root / "elsewhere.png"
    outside.write_bytes(_image_of(p).read_bytes())
    target = _image_of(p)
    target.unlink()
    target.symlink_to(outside)


def _load(p: Project, **changes) -> None:
    load_suite(_params(p, **changes))


def _download(p: Project, dataset: str = "dtd", data_root: Path | None = None) -> None:
    download.run(dataset=dataset, data_root=data_root or p.data, layout=p.layout, counts="classes")


def _backbone_dir(p: Project, model: torch.nn.Module | None = None) -> Path:
    open_clip = import_open_clip()
    spec = get_backbone("toy_vit")
    torch.manual_seed(0)
    directory = p.root / "models" / "toy_vit"
    save_prepared(spec, model or open_clip.create_model(spec.model), directory, {"note": "test"})
    return directory


def _wrong_architecture(p: Project) -> Path:
    open_clip = import_open_clip()
    model = open_clip.create_model(get_backbone("toy_vit").model)
    model.visual.proj = torch.nn.Parameter(torch.zeros(model.visual.proj.shape[0], 64))  # another embed dim
    return _backbone_dir(p, model)


def _corrupt_checkpoint(p: Project, payload: bytes) -> Path:
    directory = _backbone_dir(p)
    (directory / CHECKPOINT).write_bytes(payload)
    return directory


def _damaged_features(p: Project, damage: Callable[[bytes], bytes]) -> None:
    path = p.root / "features" / "text.safetensors"
    atomic_save_tensors(path, {"weights": torch.randn(4, 8), "logit_scale": torch.tensor(100.0)})
    path.write_bytes(damage(path.read_bytes()))
    load_text(path)


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Project], object]
    error: type[Exception]
    needles: tuple[str, ...]  # substrings the message must contain: the culprit and the fix


def _missing_dataset_root(p: Project) -> None:
    _download(p, data_root=p.root / "no-such-folder")


def _imagenet_val_flat(p: Project) -> None:
    write_imagenet_family(p.data)
    val = p.data / "imagenet" / "images" / "val"
    for i, folder in enumerate(sorted(val.iterdir())):
        for image in folder.iterdir():
            image.rename(val / f"ILSVRC2012_val_{i:08d}.JPEG")
        folder.rmdir()
    _download(p, "imagenet")


def _then_download(change: Callable[[Project], object]) -> Callable[[Project], None]:
    def run(p: Project) -> None:
        change(p)
        _download(p)

    return run


def _replace_image(payload: bytes) -> Callable[[Project], None]:
    return _then_download(lambda p: _image_of(p).write_bytes(payload))


CASES = [
    # parameters: every stage loads params.yaml first, so these fail before anything runs
    Case(
        "unknown-method",
        lambda p: _load(p, methods=["zeroshot", "coopp"]),
        ConfigError,
        ("methods[1]", "coopp", "coop"),
    ),
    Case(
        "unknown-dataset",
        lambda p: _load(p, datasets=["toy_objects", "toy_textres"]),
        ConfigError,
        ("datasets[1]", "toy_textres", "toy_textures"),
    ),
    Case(
        "unknown-backbone",
        lambda p: _load(p, backbones=["vitb16_opena"]),
        ConfigError,
        ("backbones[0]", "vitb16_opena", "vitb16_openai"),
    ),
    Case("unknown-top-level-key", lambda p: _load(p, protocol={}), ConfigError, ("protocol",)),
    Case(
        "unknown-method-param",
        lambda p: _load(p, **{"method_params.clip_adapter": {"alpah": 0.2}}),
        ConfigError,
        ("method_params.clip_adapter", "alpah"),
    ),
    Case(
        "mistyped-value",
        lambda p: _load(p, **{"method_params.clip_adapter": {"epochs": "ten"}}),
        ConfigError,
        ("epochs", "ten"),
    ),
    Case(
        "mistyped-features",
        lambda p: _load(p, **{"features.max_views": 2.5}),
        ConfigError,
        ("features.max_views", "2.5"),
    ),
    Case(
        "zero-shots",
        lambda p: _load(p, **{"protocols.few_shot.shots": [0, 1]}),
        ConfigError,
        ("few_shot", "shots", "0"),
    ),
    Case(
        "negative-shots",
        lambda p: _load(p, **{"protocols.base2new.shots": -4}),
        ConfigError,
        ("base2new", "shots", "-4"),
    ),
    Case("empty-seeds", lambda p: _load(p, **{"protocols.few_shot.seeds": []}), ConfigError, ("few_shot", "seeds")),
    Case("unknown-image-check", lambda p: _load(p, image_check="quick"), ConfigError, ("image_check", "quick")),
    # the dataset folder: the download stage checks everything before writing the index
    Case("missing-data-root", _missing_dataset_root, DataError, ("no-such-folder", "data_root")),
    Case(
        "missing-split-file",
        _then_download(lambda p: (p.data / DTD_SPLIT).unlink()),
        DataError,
        ("split_zhou_DescribableTextures.json", "docs/datasets.md"),
    ),
    Case(
        "malformed-split-json",
        _then_download(lambda p: (p.data / DTD_SPLIT).write_text('{"train": [')),
        DataError,
        ("split_zhou_DescribableTextures.json", "not valid JSON", "re-download"),
    ),
    Case(
        "split-wrong-schema",
        _then_download(lambda p: _edit_split(p, lambda raw: raw.update(extra=[]))),
        DataError,
        ("split_zhou_DescribableTextures.json", "exactly the keys train, val, test"),
    ),
    Case(
        "split-record-shape",
        _then_download(lambda p: _edit_split(p, lambda raw: raw["val"].append(["a.jpg", 1]))),
        DataError,
        ("split_zhou_DescribableTextures.json", "val[", "[relative_path, label, classname]"),
    ),
    Case(
        "label-out-of-range",
        _then_download(
            lambda p: _edit_split(
                p, lambda raw: raw["test"].__setitem__(0, [raw["test"][0][0], 4700, raw["test"][0][2]])
            )
        ),
        DataError,
        ("split_zhou_DescribableTextures.json", "test[0]", "4700", "re-download"),
    ),
    Case(
        "duplicate-entry",
        _then_download(lambda p: _edit_split(p, lambda raw: raw["test"].append(raw["train"][0]))),
        DataError,
        ("split_zhou_DescribableTextures.json", "listed twice", "train[0]"),
    ),
    Case(
        "path-with-dotdot",
        _then_download(
            lambda p: _edit_split(
                p, lambda raw: raw["train"].__setitem__(0, ["../../secrets/a.jpg", *raw["train"][0][1:]])
            )
        ),
        DataError,
        ("split_zhou_DescribableTextures.json", "../../secrets/a.jpg", "escapes the image root"),
    ),
    Case(
        "absolute-path",
        _then_download(
            lambda p: _edit_split(p, lambda raw: raw["train"].__setitem__(0, ["/etc/hostname", *raw["train"][0][1:]]))
        ),
        DataError,
        ("split_zhou_DescribableTextures.json", "/etc/hostname", "escapes the image root"),
    ),
    Case(
        "symlink-out-of-root",
        _then_download(_symlink_out),
        DataError,
        ("elsewhere.png", "escape the dataset folder", "copy the files"),
    ),
    Case(
        "pickled-split-file",
        _then_download(lambda p: (p.data / DTD_SPLIT).write_bytes(pickle.dumps({"train": [], "val": [], "test": []}))),
        DataError,
        ("split_zhou_DescribableTextures.json", "pickle", "never loads"),
    ),
    Case(
        "missing-image",
        _then_download(lambda p: _image_of(p).unlink()),
        DataError,
        ("split_zhou_DescribableTextures.json", "missing under", "docs/datasets.md#dtd"),
    ),
    Case("zero-byte-image", _replace_image(b""), DataError, ("empty file", "replace these files")),
    Case("truncated-jpeg", _replace_image(_jpeg()[:700]), DataError, ("truncated (JPEG", "replace these files")),
    Case("truncated-png", _replace_image(_png()[:300]), DataError, ("truncated (PNG", "replace these files")),
    Case("corrupt-image", _replace_image(os.urandom(4096)), DataError, ("not a decodable image", "replace")),
    Case("text-file-as-image", _replace_image(b"<html>404 Not Found</html>"), DataError, ("not a decodable image",)),
    Case("imagenet-val-not-in-class-folders", _imagenet_val_flat, DataError, ("outside wnid folders", "valprep")),
    # cached tensors: a half-written or swapped feature file is refused, never trusted
    Case(
        "feature-file-truncated",
        lambda p: _damaged_features(p, lambda b: b[: len(b) // 2]),
        DataError,
        ("text.safetensors", "truncated or corrupt", "dvc repro"),
    ),
    Case(
        "feature-file-pickled",
        lambda p: _damaged_features(p, lambda b: pickle.dumps({"weights": [1.0]})),
        DataError,
        ("text.safetensors", "pickle", "never loads"),
    ),
    # checkpoints: every stage that needs the backbone loads it first
    Case(
        "checkpoint-missing",
        lambda p: load_backbone("toy_vit", p.root / "models" / "toy_vit"),
        DataError,
        (CHECKPOINT, "dvc repro backbone@toy_vit"),
    ),
    Case(
        "checkpoint-corrupt",
        lambda p: load_backbone("toy_vit", _corrupt_checkpoint(p, os.urandom(2048))),
        DataError,
        (CHECKPOINT, "backbone@toy_vit"),
    ),
    Case(
        "checkpoint-pickled",
        lambda p: load_backbone("toy_vit", _corrupt_checkpoint(p, pickle.dumps({"visual.proj": [0.0]}))),
        DataError,
        (CHECKPOINT, "backbone@toy_vit"),
    ),
    Case(
        "checkpoint-wrong-architecture",
        lambda p: load_backbone("toy_vit", _wrong_architecture(p)),
        DataError,
        (CHECKPOINT, "backbone@toy_vit"),
    ),
]


def fails_cleanly(proj, case) -> None:
    """``case`` raises its one-line clipbench error naming every needle, and leaves no output or temporary."""
    with pytest.raises(case.error) as info:
        case.run(proj)
    message = str(info.value)
    assert isinstance(info.value, ClipbenchError)
    for needle in case.needles:
        assert needle in message, f"{case.id}: {needle!r} not in {message!r}"
    assert "\n" not in message.strip(), "errors are one line"
    assert proj.outputs() == set(), f"{case.id} left output behind: {sorted(proj.outputs())}"
    leftovers = [p for p in proj.root.rglob("*.tmp")] + [p for p in proj.root.rglob(".*.tmp")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_early_with_a_clear_message_and_no_output(proj, case):
    fails_cleanly(proj, case)


def test_the_catalogue_covers_at_least_25_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 25


def test_a_stage_reports_bad_input_in_one_line_and_exits_2(proj):
    import subprocess
    import sys

    params = _params(proj, methods=["zeroshot", "coopp"])
    out = subprocess.run(
        [sys.executable, "-m", "stages.split", "--params", str(params), "--dataset", "toy_objects"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: ") and "coopp" in out.stderr and "Traceback" not in out.stderr


# --- inputs that must simply work ----------------------------------------------------------------------------------


def _save(img: Image.Image, path: Path, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def _modes(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    grey16 = Image.fromarray(rng.integers(0, 65535, (40, 48), dtype=np.uint16))
    return {
        "grayscale-jpeg": _save(rgb.convert("L"), root / "grey.jpg", "JPEG"),
        "cmyk-jpeg": _save(rgb.convert("CMYK"), root / "cmyk.jpg", "JPEG"),
        "rgba-png": _save(rgb.convert("RGBA"), root / "rgba.png", "PNG"),
        "palette-png": _save(rgb.convert("P"), root / "palette.png", "PNG"),
        "16-bit-png": _save(grey16, root / "grey16.png", "PNG"),
        "grey-alpha-png": _save(rgb.convert("LA"), root / "la.png", "PNG"),
    }


@pytest.mark.parametrize(
    "mode", ["grayscale-jpeg", "cmyk-jpeg", "rgba-png", "palette-png", "16-bit-png", "grey-alpha-png"]
)
def test_unusual_image_modes_pass_the_checks_and_decode_to_rgb(tmp_path, mode):
    open_clip = import_open_clip()

    path = _modes(tmp_path)[mode]
    records = [Record(path.name, 0, "x")]
    assert check_images(tmp_path, records, "structure") == 1
    assert check_images(tmp_path, records, "decode") == 1
    img = open_rgb(path)
    assert img.mode == "RGB" and img.size == (48, 40)
    assert np.asarray(img).std() > 0, "content survives the conversion"
    _, _, preprocess = open_clip.create_model_and_transforms(get_backbone("toy_vit").model)
    pixels = preprocess(img)
    assert pixels.shape == (3, 32, 32) and torch.isfinite(pixels).all()


def test_decode_mode_catches_damage_the_structure_check_cannot_see(tmp_path):
    data = bytearray(_jpeg(128))
    start = data.index(b"\xff\xda")  # start of scan: corrupt the entropy-coded data, keep the end marker
    data[start + 40 : start + 400] = b"\xff" * 360
    (tmp_path / "x.jpg").write_bytes(bytes(data))
    records = [Record("x.jpg", 0, "x")]
    assert check_images(tmp_path, records, "structure") == 1
    with pytest.raises(DataError, match="x.jpg: not a decodable image"):
        check_images(tmp_path, records, "decode")


def test_a_class_with_fewer_than_k_images_keeps_all_of_them_and_is_reported(tmp_path, caplog):
    """Documented behaviour (spec §4.1, CoOp/Dassl): a class with n < K training images contributes all n."""
    layout = Layout(tmp_path)
    cfg = parse(SuiteConfig, tiny_params(data_root=str(tmp_path / "raw")), "test params")
    train = tuple(Record(f"c{c}/{i}.png", c, f"class {c}") for c in range(3) for i in range(6 if c else 2))
    val = tuple(Record(f"c{c}/v{i}.png", c, f"class {c}") for c in range(3) for i in range(4))
    test = tuple(Record(f"c{c}/t{i}.png", c, f"class {c}") for c in range(3) for i in range(2))
    ids = tuple(f"c{c}" for c in range(3))
    DatasetIndex("toy_objects", "toy_objects/images", load_index_splits(train, val, test, ids)).write(
        layout.dataset_index("toy_objects")
    )
    with caplog.at_level(logging.WARNING, logger="clipbench"):
        paths = split.run(dataset="toy_objects", cfg=cfg, layout=layout)
    four = read_manifest(next(p for p in paths if p.name.startswith("shot4_")))
    per_class = {c: sum(r.label == c for r in four.train) for c in range(3)}
    assert per_class == {0: 2, 1: 4, 2: 4}
    warned = [r.getMessage() for r in caplog.records if "fewer than 4" in r.getMessage()]
    assert len(warned) == 1 and "'class 0' (2)" in warned[0]
    assert not any("fewer than 1 " in r.getMessage() for r in caplog.records)


def load_index_splits(train, val, test, ids):
    from clipbench.data.base import DatasetSplits

    return DatasetSplits(train, val, test, ids, tuple(f"class {i}" for i in range(len(ids))))


def test_tampered_index_and_manifest_are_refused(tmp_path):
    layout = Layout(tmp_path)
    cfg = parse(SuiteConfig, tiny_params(data_root=str(tmp_path / "raw")), "test params")
    train = tuple(Record(f"c{c}/{i}.png", c, f"class {c}") for c in range(2) for i in range(6))
    test = tuple(Record(f"c{c}/t.png", c, f"class {c}") for c in range(2))
    path = DatasetIndex("toy_objects", "toy_objects/images", load_index_splits(train, (), test, ("c0", "c1"))).write(
        layout.dataset_index("toy_objects")
    )
    manifest = split.run(dataset="toy_objects", cfg=cfg, layout=layout)[0]
    for file, edit, needle in (
        (path, lambda raw: raw["test"][0].__setitem__(1, 1), "download@toy_objects"),
        (manifest, lambda raw: raw["train"].pop(), "dvc repro split"),
    ):
        raw = json.loads(file.read_text())
        edit(raw)
        file.write_text(json.dumps(raw))
        with pytest.raises(DataError, match=f"{file.name} fails its (schema/)?hash check.*{needle}"):
            (load_index if file == path else read_manifest)(file)
