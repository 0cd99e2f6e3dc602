"""User datasets declared in params.yaml: folder-per-class trees and CSV lists, strictly validated."""

from __future__ import annotations

import pytest
import yaml

from clipbench.config import load_suite
from clipbench.data import DATASETS, get_dataset, metadata
from clipbench.data.coop import validate
from clipbench.data.kshot import make_kshot
from clipbench.errors import ConfigError, DataError
from clipbench.layout import Layout
from clipbench.pipeline import download

from conftest import tiny_params
from coop_fixtures import unique_png

BIRDS = ["blue_jay", "cardinal", "house_sparrow"]


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Custom datasets registered by a test disappear after it."""
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    monkeypatch.setattr(DATASETS, "_loaded", dict(DATASETS._loaded))
    monkeypatch.setattr(metadata, "_REGISTERED", {})


def write_folders(root, splits=("train", "val", "test"), classes=BIRDS):
    for split in splits:
        for c, name in enumerate(classes):
            for i in range(2 + c if split == "train" else 1):
                path = root / split / name / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(unique_png(str(path)))


def write_csv(root, rows_by_split):
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        lines = ["path,label,classname"] + [f"{p},{lbl},{name}" for p, lbl, name in rows]
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
        for p, _, _ in rows:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            (root / p).write_bytes(unique_png(str(root / p)))


def suite(tmp_path, entries, **extra):
    params = tiny_params(data_root=str(tmp_path / "data"), custom_datasets=entries, **extra)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return load_suite(path)


def test_folder_tree_with_one_params_entry(tmp_path):
    write_folders(tmp_path / "data" / "birds")
    cfg = suite(
        tmp_path,
        {"birds": {"format": "folders", "path": "birds", "templates": ["a photo of a {}, a type of bird."]}},
        datasets=["toy_objects", "toy_textures", "birds"],
    )
    assert "birds" in cfg.datasets
    splits = validate(get_dataset("birds"), cfg.data_root)
    assert splits.classnames == tuple(BIRDS)
    assert [len([r for r in splits.train if r.label == c]) for c in range(3)] == [2, 3, 4]
    assert metadata.templates("birds", cfg.text.template_set) == ("a photo of a {}, a type of bird.",)
    index = download.run(dataset="birds", data_root=cfg.data_root, layout=Layout(tmp_path))
    assert index.is_file()


def test_csv_lists_and_missing_val_draws_from_train(tmp_path):
    root = tmp_path / "data" / "parts"
    train = [(f"img/t{i}.jpg", i % 2, ["bolt", "nut"][i % 2]) for i in range(6)]
    write_csv(root, {"train": train, "test": [("img/x0.jpg", 0, "bolt"), ("img/x1.jpg", 1, "nut")]})
    suite(tmp_path, {"parts": {"format": "csv", "path": "parts"}})
    splits = get_dataset("parts").read(tmp_path / "data")
    assert splits.classnames == ("bolt", "nut") and splits.val == ()
    split = make_kshot("parts", splits.train, splits.val, 2, 1)
    assert len(split.val) == 2 and not {r.path for r in split.val} & {r.path for r in split.train}


def test_test_only_custom_target(tmp_path):
    write_folders(tmp_path / "data" / "sketches", splits=("test",))
    cfg = suite(
        tmp_path,
        {"sketches": {"format": "folders", "path": "sketches", "test_only": True}},
        targets=["toy_objects_sketch", "sketches"],
    )
    splits = get_dataset("sketches").read(cfg.data_root)
    assert splits.train == () and len(splits.test) == 3


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"format": "folders", "path": "/abs/birds"}, "must be a folder relative to data_root"),
        ({"format": "folders", "path": "../birds"}, "must be a folder relative to data_root"),
        ({"format": "zip", "path": "birds"}, "'zip' is not one of 'folders', 'csv'"),
        ({"format": "folders", "path": "birds", "templates": ["a photo"]}, "exactly one '{}'"),
        ({"format": "folders", "path": "birds", "colour": 1}, "unknown key"),
    ],
)
def test_bad_entries_are_config_errors(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message):
        suite(tmp_path, {"birds": entry})


def test_builtin_names_cannot_be_shadowed(tmp_path):
    with pytest.raises(ConfigError, match="'dtd' is a built-in dataset"):
        suite(tmp_path, {"dtd": {"format": "folders", "path": "dtd"}})


def test_folder_and_csv_inconsistencies_name_the_file(tmp_path):
    root = tmp_path / "data" / "birds"
    write_folders(root)
    (root / "test" / "cardinal" / "0.jpg").unlink()
    (root / "test" / "cardinal").rmdir()
    suite(tmp_path, {"birds": {"format": "folders", "path": "birds"}, "parts": {"format": "csv", "path": "parts"}})
    with pytest.raises(DataError, match=r"birds/test: class folders differ.*missing \['cardinal'\]"):
        get_dataset("birds").read(tmp_path / "data")
    parts = tmp_path / "data" / "parts"
    parts.mkdir(parents=True)
    (parts / "train.csv").write_text("file,label\nimg/a.jpg,0\n")
    (parts / "test.csv").write_text("path,label,classname\nimg/a.jpg,0,bolt\n")
    with pytest.raises(DataError, match=r"train.csv: the header must be exactly path,label,classname"):
        get_dataset("parts").read(tmp_path / "data")
    write_csv(parts, {"train": [("img/a.jpg", 0, "bolt")], "test": [("img/b.jpg", 0, "bolt")]})
    (parts / "img" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"lists 1 images missing.*img/b.jpg"):
        get_dataset("parts").read(tmp_path / "data")


def test_cli_lists_custom_datasets_of_the_suite(tmp_path):
    from click.testing import CliRunner

    from clipbench.cli import main

    write_folders(tmp_path / "data" / "birds")
    suite(tmp_path, {"birds": {"format": "folders", "path": "birds"}})
    out = CliRunner().invoke(main, ["datasets", "--params", str(tmp_path / "params.yaml"), "--dataset", "birds"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[2].split()[:6] == ["birds", "found", "3", "9", "3", "3"]
