"""Few-shot sampling equals the Dassl procedure; manifests are deterministic, portable and tamper-evident."""

from __future__ import annotations

import json
import random

import pytest

from clipbench.data.base import Record
from clipbench.data.kshot import base_new_labels, make_kshot, read_manifest, relabel, write_manifest
from clipbench.errors import DataError


def records(n_classes=7, per_class=(9, 3, 12, 5, 16, 2, 20), shuffle_seed=0, prefix="train"):
    items = [Record(f"{prefix}/c{c}/{i}.png", c, f"class_{c}") for c in range(n_classes) for i in range(per_class[c])]
    random.Random(shuffle_seed).shuffle(items)  # labels interleaved, as in real split files
    return tuple(items)


def reference_fewshot(train, val, k, seed):
    """Independent re-implementation of CoOp's construction: global random.seed, then Dassl's sampler."""
    random.seed(seed)

    def fewshot(items, num):
        tracker = {}
        for item in items:
            tracker.setdefault(item.label, []).append(item)
        out = []
        for group in tracker.values():
            out.extend(random.sample(group, num) if len(group) >= num else group)
        return out

    return fewshot(list(train), k), fewshot(list(val), min(k, 4))


@pytest.mark.parametrize("k", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_reference_procedure(k, seed):
    train, val = records(), records(prefix="val", shuffle_seed=1)
    split = make_kshot("d", train, val, k, seed)
    ref_train, ref_val = reference_fewshot(train, val, k, seed)
    assert list(split.train) == ref_train
    assert list(split.val) == ref_val


def test_class_balance_and_small_classes_keep_all():
    train = records()
    split = make_kshot("d", train, records(prefix="val"), 8, 1)
    counts = {}
    for r in split.train:
        counts[r.label] = counts.get(r.label, 0) + 1
    sizes = {c: n for c, n in enumerate((9, 3, 12, 5, 16, 2, 20))}
    assert counts == {c: min(8, sizes[c]) for c in sizes}
    assert len({r.path for r in split.train}) == len(split.train)  # no repetition
    val_counts = {}
    for r in split.val:
        val_counts[r.label] = val_counts.get(r.label, 0) + 1
    assert max(val_counts.values()) == 4


def test_deterministic_and_seed_dependent():
    a = make_kshot("d", records(), records(prefix="val"), 4, 1)
    b = make_kshot("d", records(), records(prefix="val"), 4, 1)
    c = make_kshot("d", records(), records(prefix="val"), 4, 2)
    assert a.to_json() == b.to_json()
    assert a.train != c.train


def test_manifest_round_trip_and_tamper_detection(tmp_path):
    split = make_kshot("d", records(), records(prefix="val"), 2, 3)
    path = write_manifest(split, tmp_path)
    assert read_manifest(path) == split
    raw = json.loads(path.read_text())
    raw["train"][0][1] = 5
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="hash"):
        read_manifest(path)


def test_shots_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        make_kshot("d", records(), records(), 0, 1)


@pytest.mark.parametrize("n,base", [(10, 5), (37, 19), (47, 24), (1, 1), (101, 51)])
def test_base_new_split_is_ceil_half(n, base):
    b, new = base_new_labels(list(range(n)))
    assert len(b) == base and len(new) == n - base
    assert b == tuple(range(base)) and new == tuple(range(base, n))


def test_relabel_keeps_order_and_renumbers():
    rs = (Record("a", 4, "x"), Record("b", 2, "y"), Record("c", 9, "z"))
    assert relabel(rs, (4, 9)) == (Record("a", 0, "x"), Record("c", 1, "z"))
