"""The 15 benchmark datasets load from miniature CoOp-layout folders; bad folders give actionable errors."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest

from clipbench.config import load_suite
from clipbench.data import DATASETS, get_dataset, metadata
from clipbench.data.coop import CoopSpec, check_counts, validate
from clipbench.data.index import load_index
from clipbench.data.kshot import base_new_labels, make_kshot, read_manifest, relabel, write_manifest
from clipbench.errors import ConfigError, DataError
from clipbench.layout import Layout
from clipbench.pipeline import download

from coop_fixtures import write_coop_root

REAL = [n for n in DATASETS.names() if issubclass(DATASETS.get(n), CoopSpec)]  # published sizes in ``expected``


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory) -> Path:
    return write_coop_root(tmp_path_factory.mktemp("coop"))


def copy_dataset(coop_root: Path, tmp_path: Path, name: str) -> Path:
    spec = get_dataset(name)
    shutil.copytree(spec.root(coop_root), spec.root(tmp_path))
    return tmp_path


def test_every_real_dataset_is_in_the_paper_suite():
    suite = load_suite(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    assert sorted(REAL) == sorted(suite.all_datasets())


@pytest.mark.parametrize("name", REAL)
def test_fixture_loads_with_published_classes_and_base_new_counts(coop_root, name):
    spec = get_dataset(name)
    splits = validate(spec, coop_root, "classes")
    n_classes = spec.expected.classes
    assert len(splits.class_ids) == len(splits.classnames) == n_classes
    assert len(set(splits.class_ids)) == n_classes
    assert spec.test_only == (spec.expected.train is None)
    assert {r.label for r in splits.test} == set(range(n_classes))
    if not spec.test_only:
        base, new = base_new_labels({r.label for r in splits.train})
        assert (len(base), len(new)) == (math.ceil(n_classes / 2), n_classes // 2)
        assert {r.label for r in splits.train} == set(range(n_classes))
    image_root = spec.images(coop_root)
    assert all((image_root / r.path).is_file() for r in splits.test[:50])


@pytest.mark.parametrize("name", REAL)
def test_exact_mode_reports_the_published_sizes(coop_root, name):
    spec = get_dataset(name)
    problems = check_counts(spec, spec.read(coop_root), "exact")
    assert any(p.startswith("test: expected") for p in problems)
    with pytest.raises(DataError, match="does not match the published CoOp split.*data_counts: classes"):
        validate(spec, coop_root, "exact")


def test_class_names_follow_coop_conventions(coop_root):
    caltech = get_dataset("caltech101").read(coop_root)
    assert {"airplane", "face", "leopard", "motorbike", "car_side"} <= set(caltech.classnames)
    assert not {"BACKGROUND_Google", "Faces_easy"} & set(caltech.classnames)
    assert get_dataset("eurosat").read(coop_root).classnames[0] == "Annual Crop Land"
    assert "outdoor apartment_building" in get_dataset("sun397").read(coop_root).classnames
    assert get_dataset("ucf101").read(coop_root).classnames[0] == "Apply_Eye_Makeup"


def test_imagenet_ids_are_sorted_wnids_and_duplicate_names_survive(coop_root):
    splits = get_dataset("imagenet").read(coop_root)
    assert list(splits.class_ids) == sorted(splits.class_ids)
    assert splits.classnames.count("missile") == 2 and splits.classnames.count("sunglasses") == 2
    assert splits.val == ()  # validation images are drawn from train by the sampler (spec §8 item 13)
    assert all(r.path.startswith("train/") for r in splits.train)
    assert all(r.path.startswith("val/") for r in splits.test)
    v2 = get_dataset("imagenetv2").read(coop_root)
    assert v2.class_ids == splits.class_ids
    assert {r.path.split("/")[0] for r in v2.test if r.label == 7} == {"7"}


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_imagenet_a_r_map_by_wnid_and_relabel_0_to_199(coop_root, name):
    full = get_dataset("imagenet").read(coop_root)
    sub = get_dataset(name).read(coop_root)
    assert list(sub.class_ids) == sorted(sub.class_ids) and set(sub.class_ids) < set(full.class_ids)
    by_wnid = dict(zip(full.class_ids, full.classnames, strict=True))
    assert list(sub.classnames) == [by_wnid[w] for w in sub.class_ids]
    for r in sub.test:
        assert r.path.split("/")[0] == sub.class_ids[r.label]  # README.txt and other files are ignored


def test_imagenet_classnames_fall_back_to_the_bundled_copy(coop_root, tmp_path):
    root = copy_dataset(coop_root, tmp_path, "imagenet_sketch")
    (root / "imagenet-sketch" / "classnames.txt").unlink()
    assert get_dataset("imagenet_sketch").read(root).classnames[:2] == ("tench", "goldfish")


def test_download_stage_indexes_a_real_layout_portably(coop_root, tmp_path):
    layout = Layout(tmp_path)
    path = download.run(dataset="stanford_cars", data_root=coop_root, layout=layout, counts="classes")
    index = load_index(path)
    assert index.image_root == "stanford_cars"
    assert all(not Path(r.path).is_absolute() for r in index.splits.train)
    assert (coop_root / index.image_root / index.splits.test[0].path).is_file()


# --- k-shot sampling on real layouts --------------------------------------------------------------------------


def dassl_reference(train, val, k, seed):
    """Independent re-implementation of CoOp's few-shot construction (§4.1): global seed, dict grouping."""
    random.seed(seed)
    out = []
    for items, num in ((train, k), (val, min(k, 4))):
        groups = {}
        for item in items:
            groups.setdefault(item.label, []).append(item)
        out.append([x for g in groups.values() for x in (random.sample(g, num) if len(g) >= num else g)])
    return out


@pytest.mark.parametrize("name", ["dtd", "oxford_pets", "fgvc_aircraft", "sun397"])
@pytest.mark.parametrize("k,seed", [(1, 1), (2, 2), (4, 3), (16, 1)])
def test_manifests_equal_the_reference_procedure(coop_root, tmp_path, name, k, seed):
    splits = get_dataset(name).read(coop_root)
    split = make_kshot(name, splits.train, splits.val, k, seed)
    ref_train, ref_val = dassl_reference(splits.train, splits.val, k, seed)
    assert list(split.train) == ref_train and list(split.val) == ref_val
    manifest = read_manifest(write_manifest(split, tmp_path))
    assert manifest.hash == split.hash and manifest == split


def test_imagenet_val_is_drawn_from_unused_train_images(coop_root):
    splits = get_dataset("imagenet").read(coop_root)
    for k, seed in ((1, 1), (2, 3), (16, 2)):
        split = make_kshot("imagenet", splits.train, splits.val, k, seed)
        assert not {r.path for r in split.train} & {r.path for r in split.val}
        assert all(r.path.startswith("train/") for r in split.val)
        per_class = {}
        for r in split.val:
            per_class[r.label] = per_class.get(r.label, 0) + 1
        sizes = {}
        for r in splits.train:
            sizes[r.label] = sizes.get(r.label, 0) + 1
        for label, size in sizes.items():  # what is left after the shots, capped at min(K, 4)
            assert per_class.get(label, 0) == min(min(k, 4), size - min(k, size))
        assert make_kshot("imagenet", splits.train, splits.val, k, seed) == split


def test_sampler_is_class_balanced_for_random_datasets():
    from clipbench.data.base import Record

    for trial in range(25):
        rng = random.Random(trial)
        sizes = [rng.randint(1, 20) for _ in range(rng.randint(1, 12))]
        train = [Record(f"c{c}/{i}.jpg", c, f"n{c}") for c, n in enumerate(sizes) for i in range(n)]
        rng.shuffle(train)
        k, seed = rng.choice([1, 2, 4, 8, 16]), rng.randint(1, 3)
        split = make_kshot("d", tuple(train), tuple(train), k, seed)
        counts = {}
        for r in split.train:
            counts[r.label] = counts.get(r.label, 0) + 1
        assert counts == {c: min(k, n) for c, n in enumerate(sizes)}
        assert len({r.path for r in split.train}) == len(split.train)
        assert split == make_kshot("d", tuple(train), tuple(train), k, seed)
        base, new = base_new_labels(set(counts))
        assert len(base) - len(new) in (0, 1)
        assert [r.label for r in relabel(split.train, new)] == [
            new.index(r.label) for r in split.train if r.label in new
        ]


# --- templates -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL)
def test_every_dataset_has_the_four_template_sets(name):
    assert set(metadata.template_sets(name)) == {"custom", "clipfit", "imagenet7", "ensemble"}
    custom = metadata.templates(name, "custom")
    assert len(custom) == 1 and "{}" in custom[0]
    ensemble = metadata.templates(name, "ensemble")
    assert ensemble[:7] == metadata.templates("imagenet", "imagenet7")


def test_template_sets_follow_spec_2_4():
    assert metadata.templates("dtd", "custom") == ("{} texture.",)
    assert metadata.templates("dtd", "clipfit") == ("a photo of a {}, a type of texture.",)
    assert metadata.templates("eurosat", "clipfit") == metadata.templates("eurosat", "custom")
    assert len(metadata.templates("imagenet_r", "imagenet7")) == 7
    assert metadata.templates("oxford_pets", "imagenet7") == ("a photo of a {}, a type of pet.",)
    assert metadata.templates("oxford_pets", "ensemble")[-1] == "a photo of a {}, a type of pet."
    assert metadata.templates("toy_objects", "custom")[0] == "a photo of a {}."  # and a large, a small one
    with pytest.raises(ConfigError, match="available: clipfit, custom, ensemble, imagenet7"):
        metadata.templates("dtd", "nope")


# --- actionable errors -------------------------------------------------------------------------------------------


def test_missing_dataset_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"oxford_pets.*split_zhou_OxfordPets.json.*docs/datasets.md#oxford_pets"):
        get_dataset("oxford_pets").read(tmp_path)
    with pytest.raises(DataError, match="cannot be downloaded automatically.*image-net.org"):
        get_dataset("imagenet").prepare(tmp_path)


def test_half_extracted_dataset_lists_missing_images(coop_root, tmp_path):
    root = copy_dataset(coop_root, tmp_path, "dtd")
    shutil.rmtree(root / "dtd" / "images" / "banded")
    with pytest.raises(DataError, match=r"split_zhou_DescribableTextures.json lists 4 images missing.*banded/"):
        get_dataset("dtd").read(root)


def test_imagenet_val_not_sorted_into_wnid_folders(coop_root, tmp_path):
    root = copy_dataset(coop_root, tmp_path, "imagenet")
    val = root / "imagenet" / "images" / "val"
    for i, folder in enumerate(sorted(val.iterdir())):
        for image in folder.iterdir():
            image.rename(val / f"ILSVRC2012_val_{i:08d}.JPEG")
        folder.rmdir()
    with pytest.raises(DataError, match="outside wnid folders.*valprep.sh"):
        get_dataset("imagenet").read(root)


def test_imagenet_missing_class_folders_are_counted(coop_root, tmp_path):
    root = copy_dataset(coop_root, tmp_path, "imagenet")
    shutil.rmtree(root / "imagenet" / "images" / "train" / "n01440764")
    with pytest.raises(DataError, match=r"images/train: expected the 1000 wnid folders.*missing 1 .*n01440764"):
        get_dataset("imagenet").read(root)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda raw: raw["test"].append(["banded/x.jpg", 0, "dotted"]), "does not define that way"),
        (lambda raw: raw.update(test=[r for r in raw["test"] if r[1] != 3]), "no image of 1 classes"),
        (lambda raw: raw["train"].__setitem__(0, ["/etc/passwd", 0, "banded"]), "escapes the image root"),
        (lambda raw: raw.pop("val"), "exactly the keys train, val, test"),
    ],
)
def test_inconsistent_split_files_are_rejected(coop_root, tmp_path, edit, message):
    root = copy_dataset(coop_root, tmp_path, "dtd")
    path = root / "dtd" / "split_zhou_DescribableTextures.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=message):
        get_dataset("dtd").read(root)


def test_malformed_split_json_names_the_file(coop_root, tmp_path):
    root = copy_dataset(coop_root, tmp_path, "eurosat")
    (root / "eurosat" / "split_zhou_EuroSAT.json").write_text("{not json")
    with pytest.raises(DataError, match=r"split_zhou_EuroSAT.json is not valid JSON"):
        get_dataset("eurosat").read(root)


def test_fgvc_variant_lists_from_another_release(coop_root, tmp_path):
    root = copy_dataset(coop_root, tmp_path, "fgvc_aircraft")
    path = root / "fgvc_aircraft" / "images_variant_val.txt"
    path.write_text(path.read_text() + "1234567 Concorde\n")
    with pytest.raises(DataError, match=r"images_variant_val.txt:\d+: variant 'Concorde' is not in variants.txt"):
        get_dataset("fgvc_aircraft").read(root)


def test_wrong_archive_in_an_imagenet_variant_folder(coop_root, tmp_path):
    root = copy_dataset(coop_root, tmp_path, "imagenet_r")
    (root / "imagenet-rendition" / "imagenet-r" / "cats").mkdir()
    with pytest.raises(DataError, match=r"folders \['cats'\] are not ImageNet wnids.*imagenet-r.tar"):
        get_dataset("imagenet_r").read(root)
    root = copy_dataset(coop_root, tmp_path / "v2", "imagenetv2")
    shutil.rmtree(root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / "999")
    with pytest.raises(DataError, match="expected folders 0..999, found 999 folders"):
        get_dataset("imagenetv2").read(root)


def test_classnames_txt_with_foreign_wnids_is_rejected(coop_root, tmp_path):
    root = copy_dataset(coop_root, tmp_path, "imagenet_a")
    path = root / "imagenet-adversarial" / "classnames.txt"
    path.write_text(path.read_text().replace("n01440764", "n99999999"))
    with pytest.raises(DataError, match="not the 1000 ImageNet-1k classes"):
        get_dataset("imagenet_a").read(root)


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r", "imagenetv2"])
def test_class_specific_weights_are_restricted_by_wnid(coop_root, name):
    import torch

    from clipbench.data import LabelSpace
    from clipbench.methods.base import EvalTarget, train_class_index

    full = get_dataset("imagenet").read(coop_root)
    sub = get_dataset(name).read(coop_root)
    space = lambda s: LabelSpace(name, s.class_ids, s.classnames, ("a photo of a {}.",))  # noqa: E731
    target = EvalTarget(space(sub), torch.zeros(len(sub.class_ids), 4), 100.0, space(full))
    rows = train_class_index(target)
    assert [full.class_ids[i] for i in rows] == list(sub.class_ids)
    assert [full.classnames[i] for i in rows] == list(sub.classnames)
