"""The bad-input catalogue, continued: inputs that used to give wrong numbers, late tracebacks or silent acceptance.

Four classes (the issue "No silent wrong numbers"): artifacts trusted instead of verified, degenerate runs stored as
``ok``, late or raw failures, silently accepted input. Each error case asserts the message (culprit and fix), that
it is one line, that nothing was written (it fails before any heavy work) and, for parameter files, the exit status
of ``clipbench validate``. Verification cases check that a changed artifact is recomputed or refused by name.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from test_bad_input import DTD_SPLIT, Project, _image_of, _params, coop_root, fails_cleanly, proj  # noqa: F401

from clipbench.cells import CellStore, TrainCell, TrainUnit
from clipbench.cli import main as cli
from clipbench.config import SuiteConfig, load_suite
from clipbench.data.base import DatasetSplits, Record
from clipbench.data.index import DatasetIndex
from clipbench.errors import ClipbenchWarning, ConfigError, DataError
from clipbench.executors import run_cells
from clipbench.features import check_source, load_text, read_feature_dir, save_text, write_feature_dir
from clipbench.io import load_tensors
from clipbench.layout import Layout
from clipbench.pipeline import download, split
from clipbench.pipeline.train import degenerate
from clipbench.rules import check_prompts
from clipbench.typed import parse

from conftest import tiny_params
from coop_fixtures import unique_png


def _raw(p: Project, text: str | bytes) -> Path:
    path = p.root / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _good_yaml(p: Project) -> str:
    return yaml.safe_dump(tiny_params(data_root=str(p.data)))


def _bomb_text(p: Project) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n" + _good_yaml(p)


def _custom(p: Project, entry: dict, **changes) -> Path:
    return _params(p, custom_datasets={"parts": entry}, **changes)


@dataclass(frozen=True)
class ParamsCase:
    id: str
    write: Callable[[Project], Path]  # writes a broken params file, returns its path
    needles: tuple[str, ...]


PARAMS_CASES = [
    # safe loading
    ParamsCase("yaml-alias-bomb", lambda p: _raw(p, _bomb_text(p)), ("aliases expanding to", "write values out")),
    ParamsCase("yaml-recursive-alias", lambda p: _raw(p, "a: &x [1, *x]\n"), ("recursive alias",)),
    ParamsCase(
        "yaml-duplicate-key",
        lambda p: _raw(p, _good_yaml(p) + "suite: again\n"),
        ("duplicate key 'suite'", "keep one"),
    ),
    ParamsCase("params-not-utf8", lambda p: _raw(p, b"suite: t\xe9st\n"), ("not UTF-8", "offset 8", "UTF-8")),
    ParamsCase(
        "params-too-large", lambda p: _raw(p, _good_yaml(p) + "#" * (1 << 20)), ("byte limit", "parameters file")
    ),
    # every float finite
    ParamsCase(
        "lr-nan",
        lambda p: _params(p, **{"method_params.clip_adapter": {"lr": float("nan")}}),
        ("method_params.clip_adapter.lr", "not a finite number"),
    ),
    ParamsCase(
        "alpha-nan-string",
        lambda p: _params(p, **{"method_params.clip_adapter": {"alpha": "nan"}}),
        ("clip_adapter.alpha", "not a finite number"),
    ),
    ParamsCase(
        "timeout-inf",
        lambda p: _params(p, **{"tracking.timeout_s": float("inf")}),
        ("tracking.timeout_s", "finite"),
    ),
    ParamsCase(
        "crop-scale-nan",
        lambda p: _params(p, **{"method_params.clip_adapter.crop_scale": [float("nan"), 1.0]}),
        ("crop_scale[0]",),
    ),
    # cross-field rules
    ParamsCase(
        "few-shot-dataset-twice",
        lambda p: _params(p, **{"protocols.few_shot.datasets": ["toy_objects", "toy_objects"]}),
        ("few_shot.datasets", "listed twice"),
    ),
    ParamsCase(
        "base2new-dataset-twice",
        lambda p: _params(p, **{"protocols.base2new.datasets": ["toy_textures", "toy_textures"]}),
        ("base2new.datasets", "'toy_textures' is listed twice"),
    ),
    ParamsCase(
        "transfer-target-is-source",
        lambda p: _params(p, **{"protocols.cross_dataset.targets": ["toy_objects"]}),
        ("cross_dataset.targets", "also the source", "remove it"),
    ),
    ParamsCase(
        "transfer-target-twice",
        lambda p: _params(p, **{"protocols.domain_generalization.targets": ["toy_objects_sketch"] * 2}),
        ("domain_generalization.targets", "listed twice"),
    ),
    ParamsCase(
        "seed-out-of-range",
        lambda p: _params(p, **{"protocols.few_shot.seeds": [1, 2**40]}),
        ("few_shot.seeds", str(2**40), "up to"),
    ),
    ParamsCase(
        "shots-out-of-range",
        lambda p: _params(p, **{"protocols.base2new.shots": 10**6}),
        ("base2new.shots", "up to 10000"),
    ),
    ParamsCase(
        "custom-template-stray-brace",
        lambda p: _custom(p, {"format": "folders", "path": "parts", "templates": ["a {} photo }"]}),
        ("custom_datasets.parts.templates", "a {} photo }", "no other brace"),
    ),
    ParamsCase(
        "custom-template-named-field",
        lambda p: _custom(p, {"format": "folders", "path": "parts", "templates": ["a photo of a {name}"]}),
        ("{name}", "exactly one '{}'"),
    ),
    ParamsCase(
        "method-template-stray-brace",
        lambda p: _params(
            p,
            methods=["zeroshot", "linear_probe", "clip_adapter", "clip_cite"],
            **{"method_params.clip_cite": {"prompt_template": "a {} }"}},
        ),
        ("clip_cite.prompt_template", "does not format"),
    ),
    ParamsCase("pretrain-zero-images", lambda p: _params(p, **{"toy_pretrain.images": 0}), ("toy_pretrain.images",)),
    ParamsCase(
        "pretrain-negative-batch", lambda p: _params(p, **{"toy_pretrain.batch_size": -8}), ("toy_pretrain.batch_size",)
    ),
    ParamsCase(
        "data-root-is-a-file",
        lambda p: _params(p, data_root=str(p.data / DTD_SPLIT)),
        ("data_root", "is a file", "datasets folder"),
    ),
    ParamsCase(
        "params-for-unlisted-method",
        lambda p: _params(p, **{"method_params.coop": {"epochs": 1}}),
        ("method_params.coop", "not in methods", "ignored"),
    ),
    ParamsCase("unknown-overlap-mode", lambda p: _params(p, train_test_overlap="maybe"), ("train_test_overlap",)),
    ParamsCase("max-pixels-zero", lambda p: _params(p, max_image_pixels=0), ("max_image_pixels",)),
]


@pytest.mark.parametrize("case", PARAMS_CASES, ids=[c.id for c in PARAMS_CASES])
def test_bad_params_fail_in_validate_with_one_line_and_exit_2(proj, case):  # noqa: F811
    path = case.write(proj)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    message = str(info.value)
    for needle in case.needles:
        assert needle in message, f"{case.id}: {needle!r} not in {message!r}"
    out = CliRunner().invoke(cli, ["validate", "--params", str(path)])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: ") and out.output.count("\n") == 1 and "Traceback" not in out.output
    assert proj.outputs() == set()


def test_debug_shows_the_traceback(proj):  # noqa: F811
    path = PARAMS_CASES[0].write(proj)
    out = CliRunner().invoke(cli, ["--debug", "validate", "--params", str(path)])
    assert out.exit_code != 0 and isinstance(out.exception, ConfigError)


# --- data and stage inputs: refused before anything is written ------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (a decompression bomb needs no more to be refused)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _download(p: Project, dataset: str = "dtd", **kwargs) -> None:
    download.run(dataset=dataset, data_root=p.data, layout=p.layout, counts="classes", **kwargs)


def _custom_download(p: Project, entry: dict, make: Callable[[Path], None]) -> None:
    load_suite(_custom(p, entry))  # registers the dataset
    make(p.data / "parts")
    _download(p, "parts")


def _folders(root: Path, classes=("bolt", "nut")) -> None:
    for part in ("train", "test"):
        for name in classes:
            for i in range(3):
                path = root / part / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(unique_png(f"{part}/{name}/{i}"))


def _symlink_loop(root: Path) -> None:
    _folders(root)
    (root / "train" / "loop").symlink_to("loop")


def _csv_latin1(root: Path) -> None:
    _folders(root)
    rows = "path,label,classname\ntrain/bolt/0.png,0,bolt\ntrain/nut/0.png,1,écrou\n".encode("latin-1")
    (root / "train.csv").write_bytes(rows)
    (root / "test.csv").write_text("path,label,classname\ntest/bolt/0.png,0,bolt\n")


def _copy_test_into_train(p: Project) -> None:
    _image_of(p, "test", 0).write_bytes(_image_of(p, "train", 0).read_bytes())


@dataclass(frozen=True)
class DataCase:
    id: str
    run: Callable[[Project], object]
    error: type[Exception]
    needles: tuple[str, ...]


DATA_CASES = [
    DataCase(
        "symlink-loop-in-class-folder",
        lambda p: _custom_download(p, {"format": "folders", "path": "parts"}, _symlink_loop),
        DataError,
        ("loop", "symlink loop"),
    ),
    DataCase(
        "csv-not-utf8",
        lambda p: _custom_download(p, {"format": "csv", "path": "parts"}, _csv_latin1),
        DataError,
        ("train.csv", "not UTF-8", "offset 63"),
    ),
    DataCase(
        "decompression-bomb-png",
        lambda p: (_image_of(p).write_bytes(_png_header_only(60_000, 60_000)), _download(p)),
        DataError,
        ("train_0000.jpg", "decompression-bomb limit", "max_image_pixels"),
    ),
    DataCase(
        "test-image-copied-into-train",
        lambda p: (_copy_test_into_train(p), _download(p)),
        DataError,
        ("byte-identical", "leaks test labels", "train_test_overlap: warn"),
    ),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c.id for c in DATA_CASES])
def test_bad_data_fails_before_any_output(proj, case):  # noqa: F811
    fails_cleanly(proj, case)


def test_train_test_overlap_warn_accepts_with_a_warning(proj):  # noqa: F811
    _copy_test_into_train(proj)
    with pytest.warns(ClipbenchWarning, match="byte-identical"):
        _download(proj, overlap="warn")


def test_unsupported_image_files_are_named_not_skipped_silently(proj):  # noqa: F811
    def make(root: Path) -> None:
        _folders(root)
        (root / "train" / "bolt" / "scan.tiff").write_bytes(b"II*\0")

    with pytest.warns(ClipbenchWarning, match=r"1 files of an unsupported format skipped \(e.g. 'scan.tiff'\)"):
        _custom_download(proj, {"format": "folders", "path": "parts"}, make)


def test_a_stage_turns_an_os_error_into_one_line(proj):  # noqa: F811
    import subprocess
    import sys

    params = _params(proj)
    (proj.root / "data" / "index").mkdir(parents=True)
    (proj.root / "data" / "index" / "toy_objects.json").mkdir()  # a folder where the index file belongs
    out = subprocess.run(
        [sys.executable, "-m", "stages.split", "--params", str(params), "--dataset", "toy_objects"],
        cwd=proj.root,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


# --- rules that need the dataset index: the split stage checks them before sampling -------------------------------


def _index(layout: Layout, classes: int, val: bool, per_class: int = 6) -> None:
    train = tuple(Record(f"c{c}/{i}.png", c, f"class {c}") for c in range(classes) for i in range(per_class))
    valid = tuple(Record(f"c{c}/v.png", c, f"class {c}") for c in range(classes)) if val else ()
    test = tuple(Record(f"c{c}/t.png", c, f"class {c}") for c in range(classes))
    ids = tuple(f"c{c}" for c in range(classes))
    splits = DatasetSplits(train, valid, test, ids, tuple(f"class {c}" for c in range(classes)))
    DatasetIndex("toy_objects", "toy_objects/images", splits).write(layout.dataset_index("toy_objects"))


@pytest.mark.parametrize(
    "classes, val, per_class, needles",
    [
        (1, True, 6, ("base2new.datasets", "'toy_objects' has 1 class", "at least 2")),
        (3, False, 4, ("no validation split", "no image left", "lower the shots or add a val split")),
    ],
    ids=["base2new-one-class", "kshot-without-val-split"],
)
def test_index_rules_fail_in_split_before_any_manifest(tmp_path, classes, val, per_class, needles):
    layout = Layout(tmp_path)
    _index(layout, classes, val, per_class)
    cfg = parse(SuiteConfig, tiny_params(data_root=str(tmp_path / "raw")), "params.yaml")
    with pytest.raises(ConfigError) as info:
        split.run(dataset="toy_objects", cfg=cfg, layout=layout)
    for needle in needles:
        assert needle in str(info.value)
    assert not layout.splits("toy_objects").exists()


def test_prompts_identical_after_tokenisation_are_refused():
    from clipbench.backbones import get_backbone, import_open_clip

    tokenizer = import_open_clip().get_tokenizer(get_backbone("toy_vit").model)  # a 16-token context
    common = "small red wooden box with a long curved handle and a brass lock on the"
    names = (f"{common} left side", f"{common} right side")
    prompts = [[f"a photo of a {n}."] for n in names]
    with pytest.raises(DataError, match="identical prompts after tokenisation.*shorten the class names"):
        check_prompts("parts", names, prompts, tokenizer)
    check_prompts("imagenet", ("crane", "crane"), [["a crane."], ["a crane."]], tokenizer)  # same name: allowed


# --- verified reads: a changed artifact is recomputed (own cache) or refused by name --------------------------------


def _cell_run(store: CellStore, computed: list) -> None:
    cell = TrainCell("toy_objects", "all", 1, 1)

    def compute(c: TrainCell, key: str) -> None:
        computed.append(c)
        store.put(c.name, key, lambda tmp: {"row": {"value": 42.67}})

    run_cells([cell], lambda c: "key-1", compute, store)


def test_a_hand_edited_result_cell_is_recomputed(tmp_path):
    store, computed = CellStore(tmp_path / "cells"), []
    _cell_run(store, computed)
    _cell_run(store, computed)
    assert len(computed) == 1, "an intact cell is reused"
    file = tmp_path / "cells" / "all_shot1_seed1" / "cell.json"
    file.write_text(file.read_text().replace("42.67", "61.44"))
    _cell_run(store, computed)
    assert len(computed) == 2, "the edited cell was recomputed"
    assert json.loads(file.read_text())["row"]["value"] == 42.67


def test_an_edited_tensor_file_is_refused_by_name(tmp_path):
    path = tmp_path / "text.safetensors"
    save_text(path, torch.randn(3, 8), 100.0, {"index_hash": "abc"})
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes +inf, the file stays a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="text.safetensors fails its content hash check.*dvc repro"):
        load_tensors(path)
    with pytest.raises(DataError):
        load_text(path)


def test_an_edited_feature_directory_is_refused_by_name(tmp_path):
    path = tmp_path / "test"
    write_feature_dir(path, {"features": torch.randn(2, 4)}, {"test": ["a.png", "b.png"]}, {"index_hash": "abc"})
    assert read_feature_dir(path).meta == {"index_hash": "abc"}
    (path / "index.json").write_text(json.dumps({"test": ["b.png", "a.png"]}))  # rows swapped
    with pytest.raises(DataError, match="index.json changed since it was written.*dvc repro"):
        read_feature_dir(path)


def test_features_of_another_dataset_are_refused():
    with pytest.raises(DataError, match="test was extracted from another dataset or index.*dvc repro"):
        check_source(
            {"index_hash": "of-toy_scenes"}, "index_hash", "of-toy_textures", Path("features/toy_vit/toy_textures/test")
        )


# --- degenerate runs are never ok -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "diagnostics, state, reason",
    [
        ({"final_loss": float("nan")}, {"w": torch.ones(2)}, "non-finite final_loss"),
        ({"final_loss": 0.5}, {"w": torch.tensor([1.0, float("inf")])}, "non-finite values in the trained state 'w'"),
        ({"val_acc": float("nan")}, {"w": torch.ones(2), "mask": torch.tensor([True])}, None),
    ],
    ids=["nan-loss", "inf-parameter", "nan-diagnostic-that-is-not-a-loss"],
)
def test_degenerate_training_is_detected(diagnostics, state, reason):
    found = degenerate(diagnostics, state)
    assert (found is None) if reason is None else (reason in found)


def test_a_failed_training_cell_is_stored_failed_without_state(tmp_path, monkeypatch):
    from clipbench.pipeline import train
    from clipbench.runtime import RuntimeConfig

    class Diverges:
        name = "diverges"
        host_fit = True

        def __init__(self, config):
            pass

        def fit(self, task):
            return {"final_loss": float("nan")}

        def state_dict(self):
            return {"w": torch.full((2,), float("nan"))}

    class Task:
        space = type("Space", (), {"class_ids": ("c0",)})()

        def to(self, device):
            return self

    monkeypatch.setattr(train, "build_task", lambda *a: Task())
    monkeypatch.setattr(train, "replace", lambda task, **k: task)
    cell, store = TrainCell("toy_objects", "all", 1, 1), CellStore(tmp_path / "models")
    split_stub = type("Split", (), {"hash": "h"})()
    train._train_cell(Diverges, TrainUnit(cell, "", {}), split_stub, None, store, "k", RuntimeConfig())
    record = store.read(cell.name)
    assert record["status"] == "failed" and "non-finite final_loss" in record["reason"]
    assert not (store.path(cell.name) / train.STATE_FILE).exists(), "no degenerate state is kept"
