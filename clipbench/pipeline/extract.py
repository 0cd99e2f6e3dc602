"""Stage ``extract``: cached embeddings of one dataset under one frozen backbone (see :mod:`clipbench.features`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from clipbench import features, recipes, views
from clipbench.backbones import load_backbone
from clipbench.codegraph import fingerprint
from clipbench.data import metadata
from clipbench.data.fullval import read_full_val
from clipbench.data.index import DatasetIndex, load_index
from clipbench.data.kshot import read_manifest
from clipbench.io import atomic_directory, atomic_write_json
from clipbench.layout import Layout
from clipbench.pipeline.code import stage_roots
from clipbench.rules import check_prompts
from clipbench.typed import stable_hash

if TYPE_CHECKING:
    from clipbench.config import SuiteConfig


def feature_key(backbone_sha: str, cfg: SuiteConfig) -> str:
    """Everything that determines one image's embeddings (not which images were extracted)."""
    code = fingerprint(*stage_roots("extract"))["hash"]  # the same as code/extract.json
    return stable_hash({"backbone": backbone_sha, "features": cfg.features, "code": code})


def run(
    *, backbone: str, dataset: str, cfg: SuiteConfig, layout: Layout, data_root: Path, test_only: bool = False
) -> dict:
    """Write text (the suite's classifier and the extra ones of the methods' text recipes), test and (unless
    ``test_only``) fit features; return the encode/decode counts."""
    bb = load_backbone(backbone, layout.backbone(backbone), cfg.runtime.torch_device(), cfg.runtime.precision)
    index = load_index(layout.dataset_index(dataset))
    image_dir = Path(data_root) / index.image_root
    key = feature_key(bb.sha256, cfg)
    sets = (cfg.text.template_set, *recipes.extra_sets(cfg, dataset))
    for name in sets:
        space = index.label_space(metadata.templates(dataset, name))
        check_prompts(dataset, space.classnames, space.prompts(), bb.tokenizer)  # before any encoder work
    _write_text(bb, index, cfg.text.template_set, layout.text_features(bb.spec.key, dataset))
    _write_text_sets(bb, index, sets[1:], layout)
    start = time.perf_counter()
    counts = [_write_test(bb, index, image_dir, cfg, layout, key)]
    if not test_only:
        counts.append(_write_fit(bb, index, image_dir, cfg, layout, key))
    return {
        "decoded": sum(c.decoded for c in counts),
        "encoded": sum(c.encoded for c in counts),
        "seconds": time.perf_counter() - start,
    }


def _counts(counter: features.EncodeCounter) -> dict[str, int]:
    """Encoder work of one feature directory, stored in its ``meta.json`` as ``encode_counts``."""
    return {"decoded": counter.decoded, "encoded": counter.encoded}


def _write_text(bb, index: DatasetIndex, template_set: str, path: Path) -> None:
    templates = metadata.templates(index.dataset, template_set)
    space = index.label_space(templates)
    weights = bb.text_classifier(space.prompts())
    meta = {
        "templates": list(templates),
        "template_set": template_set,
        "class_ids": list(space.class_ids),
        "index_hash": index.hash,
        "backbone_sha256": bb.sha256,
    }
    features.save_text(path, weights, bb.logit_scale, meta)


def _write_text_sets(bb, index: DatasetIndex, sets: tuple[str, ...], layout: Layout) -> None:
    """The extra classifiers of the methods' text recipes, as one directory with ``sets.json`` naming them (so the
    directory is never empty: DVC warns about an empty output directory on every stage that reads it)."""
    with atomic_directory(layout.text_sets(bb.spec.key, index.dataset)) as tmp:
        for name in sets:
            _write_text(bb, index, name, tmp / f"{name}.safetensors")
        atomic_write_json(tmp / "sets.json", {"sets": list(sets)})


def _write_test(
    bb, index: DatasetIndex, image_dir: Path, cfg: SuiteConfig, layout: Layout, key: str
) -> features.EncodeCounter:
    counter = features.EncodeCounter()
    paths = [r.path for r in index.splits.test]
    workers = cfg.runtime.decode_workers
    enc = features.encode_paths(bb, image_dir, paths, cfg.features.batch_size, counter=counter, workers=workers)
    labels = torch.tensor([r.label for r in index.splits.test], dtype=torch.long)
    meta = {"feature_key": key, "index_hash": index.hash, "images": len(paths), "encode_counts": _counts(counter)}
    features.write_feature_dir(
        layout.test_features(bb.spec.key, index.dataset),
        {"features": enc.plain, "pre_features": enc.pre, "labels": labels},
        {"test": paths},
        meta,
    )
    return counter


def _write_fit(
    bb, index: DatasetIndex, image_dir: Path, cfg: SuiteConfig, layout: Layout, key: str
) -> features.EncodeCounter:
    counter = features.EncodeCounter()
    manifests = {(m.shots, m.seed): m for m in map(read_manifest, sorted(layout.splits(index.dataset).glob("*.json")))}
    train_pool = sorted({r.path for m in manifests.values() for r in m.train})
    full_val = read_full_val(layout.splits(index.dataset))  # written only under selection: full_val
    val_pool = sorted({r.path for m in manifests.values() for r in m.val} | {r.path for r in full_val})
    f, workers = cfg.features, cfg.runtime.decode_workers
    train = features.encode_paths(bb, image_dir, train_pool, f.batch_size, counter=counter, workers=workers)
    val = features.encode_paths(bb, image_dir, val_pool, f.batch_size, counter=counter, workers=workers)
    tensors = {
        "train_plain": train.plain,
        "val_plain": val.plain,
        "train_pre_plain": train.pre,
        "val_pre_plain": val.pre,
    }
    listing: dict = {"train": train_pool, "val": val_pool}
    groups = views.view_groups(cfg, index.dataset)
    for group in groups:
        counts = group.image_counts(manifests)
        tensors |= _encode_group(bb, image_dir, group, counts, cfg, counter)
        listing[f"views/{group.name}"] = {"paths": list(counts), "counts": list(counts.values())}
    meta = {
        "feature_key": key,
        "index_hash": index.hash,
        "views": {g.name: sum(listing[f"views/{g.name}"]["counts"]) for g in groups},
        "train_images": len(train_pool),
        "val_images": len(val_pool),
        "encode_counts": _counts(counter),
    }
    features.write_feature_dir(layout.fit_features(bb.spec.key, index.dataset), tensors, listing, meta)
    return counter


def _encode_group(
    bb, image_dir: Path, group: views.ViewGroup, counts: dict[str, int], cfg: SuiteConfig, counter
) -> dict[str, torch.Tensor]:
    """One view group's embeddings, ``[sum(counts), D]``: the views of each image in turn, images in path order
    (pre-projection ones too when the group's methods read them). Images with equal counts are encoded together."""
    f, recipe = cfg.features, group.recipe
    by_count: dict[int, list[str]] = {}
    for path, count in counts.items():
        by_count.setdefault(count, []).append(path)
    rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for count, paths in by_count.items():
        spec = features.ViewSpec(count, recipe.scale, f.seed, recipe.flip, recipe.stream(group.seed))
        enc = features.encode_paths(
            bb, image_dir, paths, f.batch_size, spec, counter, workers=cfg.runtime.decode_workers, with_plain=False
        )
        rows |= {p: (enc.views[:, i], enc.pre_views[:, i]) for i, p in enumerate(paths)}
    order = list(counts)
    out = {f"views/{group.name}": _rows(rows, order, 0, bb.embed_dim)}
    if group.pre:
        out[f"pre_views/{group.name}"] = _rows(rows, order, 1, bb.pre_proj_dim)
    return out


def _rows(rows: dict, order: list[str], which: int, width: int) -> torch.Tensor:
    return torch.cat([rows[p][which] for p in order]) if order else torch.zeros(0, width)
