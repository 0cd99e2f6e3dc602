"""Frozen-encoder feature extraction: each image is decoded once and encoded once per needed view.

Outputs (safetensors, no pickle):

* ``text.safetensors`` - the zero-shot classifier ``[C, D]`` of the dataset's classes and the logit scale.
* ``test/`` - test-transform embeddings of the test split and their labels (read only by evaluation).
* ``fit/`` - embeddings of the *pool* of few-shot images (the union over all manifests of the dataset):
  test-transform embeddings of train and val images, and one flat ``views/<group>`` tensor per view group
  (recipe and run seed; :mod:`clipbench.views`) holding each train image's augmented views, as many as the
  planned cells that read the group need (``index.json`` lists paths and counts; :meth:`FeatureDir.views`).

Embeddings are projected and not normalised; each method normalises as its reference does. Every image is
also stored *before* the visual projection (``*_pre`` tensors, and ``pre_views/<group>`` for groups ProLIP
reads; ProLIP trains the projection on them): both come from one forward pass, at no extra encoder work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from clipbench import seal
from clipbench.backbones import Backbone
from clipbench.data.images import augmented_view, open_rgb, to_normalised_tensor, view_rng
from clipbench.data.loader import load_batches, pil_stage, pixel_stats, to_uint8
from clipbench.errors import DataError
from clipbench.io import (
    atomic_directory,
    atomic_save_tensors,
    atomic_write_json,
    load_tensors,
    load_tensors_with_metadata,
)


@dataclass
class EncodeCounter:
    """Counts images decoded and image-encoder inputs, recorded with every extraction."""

    decoded: int = 0
    encoded: int = 0


@dataclass(frozen=True)
class ViewSpec:
    """``views`` augmented views per image: RRC(``scale``) + (if ``flip``) a flip, drawn from the per-(image, view)
    stream of :func:`clipbench.data.images.view_rng` with base ``seed`` and extra ``stream``."""

    views: int
    scale: tuple[float, float]
    seed: int
    flip: bool = True
    stream: tuple[int, ...] = ()


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class Encoded:
    """Embeddings of an image list: projected and pre-projection, plain ``[N, .]`` and views ``[V, N, .]``."""

    plain: torch.Tensor
    pre: torch.Tensor
    views: torch.Tensor | None = None
    pre_views: torch.Tensor | None = None


def _encode(backbone: Backbone, pixels: torch.Tensor, counter: EncodeCounter) -> tuple[torch.Tensor, torch.Tensor]:
    counter.encoded += len(pixels)
    return backbone.encode_images_with_pre(pixels)


def _cat(parts: list[torch.Tensor], dim: int, width: int) -> torch.Tensor:
    return torch.cat(parts, dim=dim) if parts else torch.zeros(0, width)


def _on_gpu(backbone: Backbone) -> bool:
    return backbone.device.type == "cuda"


@dataclass(frozen=True)
class _ChunkPixels:
    """Pixel batches of one chunk of files: the test transform, then each augmented view (``make`` of a loader).

    Each file is decoded once per chunk; only that chunk's images are alive, so memory does not grow with the
    dataset. Views are a pure function of (path, view, seed), so the process that prepares them cannot change
    them. Batches are uint8 when the backbone's eval transform splits into a PIL part and its normalisation
    (normalised on the encoding device, :func:`clipbench.data.loader.to_model_input`), else normalised fp32.
    """

    image_dir: Path
    chunks: tuple[tuple[str, ...], ...]
    preprocess: object
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    views: ViewSpec | None
    plain: bool = True  # the test-transform batch first

    def __call__(self, i: int) -> tuple[int, list[torch.Tensor]]:
        chunk = self.chunks[i]
        images = [open_rgb(self.image_dir / p) for p in chunk]
        split = pil_stage(self.preprocess) if self.uint8 else None
        stacks = []
        if self.plain:
            stacks.append(torch.stack([to_uint8(split[0](im)) if split else self.preprocess(im) for im in images]))
        v_spec = self.views
        for v in range(v_spec.views if v_spec else 0):
            seen = [
                augmented_view(im, self.size, v_spec.scale, view_rng(p, v, v_spec.seed, v_spec.stream), v_spec.flip)
                for p, im in zip(chunk, images, strict=True)
            ]
            stacks.append(
                torch.stack([to_uint8(x) if split else to_normalised_tensor(x, self.mean, self.std) for x in seen])
            )
        return len(images), stacks

    @property
    def uint8(self) -> bool:
        split = pil_stage(self.preprocess)
        return split is not None and tuple(split[1]) == self.mean and tuple(split[2]) == self.std


def _chunk_pixels(
    backbone: Backbone, image_dir: Path, paths: list[str], batch_size: int, views: ViewSpec | None, plain: bool = True
):
    chunks = tuple(tuple(c) for c in _batches(paths, batch_size))
    return _ChunkPixels(
        image_dir, chunks, backbone.preprocess, backbone.image_size, *pixel_stats(backbone.model), views, plain
    )


def encode_paths(
    backbone: Backbone,
    image_dir: Path,
    paths: list[str],
    batch_size: int,
    views: ViewSpec | None = None,
    counter: EncodeCounter | None = None,
    overlap: bool | None = None,
    workers: int = 0,
    with_plain: bool = True,
) -> Encoded:
    """Test-transform embeddings (unless not ``with_plain``: then empty) and, if ``views``, augmented-view embeddings,
    each with and without projection.

    ``workers`` decode and transform batches in worker processes (``runtime.decode_workers``) while the encoder
    runs. With none, ``overlap`` (default: when the model is on a GPU) lets a background thread prepare the next
    batch; on a CPU the two would only compete for the same cores.
    """
    counter = counter or EncodeCounter()
    n_views = views.views if views else 0
    pre, plain = [], []
    pre_views, viewed = [[] for _ in range(n_views)], [[] for _ in range(n_views)]
    make = _chunk_pixels(backbone, image_dir, paths, batch_size, views, with_plain)
    on_gpu = _on_gpu(backbone)
    batches = load_batches(make, len(make.chunks), workers, pin=on_gpu, overlap=on_gpu if overlap is None else overlap)
    for decoded, stacks in batches:
        counter.decoded += decoded
        for view, pixels in enumerate(stacks, start=-1 if with_plain else 0):
            out_pre, out_proj = _encode(backbone, pixels, counter)
            (pre if view < 0 else pre_views[view]).append(out_pre)
            (plain if view < 0 else viewed[view]).append(out_proj)
    stacked = [
        torch.stack([torch.cat(parts) for parts in lists]) if n_views and paths else None
        for lists in (viewed, pre_views)
    ]
    return Encoded(
        plain=_cat(plain, 0, backbone.embed_dim),
        pre=_cat(pre, 0, backbone.pre_proj_dim),
        views=stacked[0],
        pre_views=stacked[1],
    )


def save_text(path: Path, weights: torch.Tensor, logit_scale: float, meta: dict) -> Path:
    return atomic_save_tensors(
        path,
        {"weights": weights, "logit_scale": torch.tensor([logit_scale])},
        {"meta": json.dumps(meta, sort_keys=True)},
    )


def check_source(meta: dict, key: str, expected: object, path: Path) -> None:
    """Features must come from the dataset they are used with: ``meta[key]`` (``index_hash``, or ``class_ids`` where
    test labels must not count) equals ``expected``."""
    if meta.get(key) != expected:
        raise DataError(
            f"{path} was extracted from another dataset or index ({key} differs from the index's); "
            "delete it and run `dvc repro`"
        )


def load_text(path: Path) -> tuple[torch.Tensor, float, dict]:
    if not path.is_file():
        raise DataError(f"text features {path} are missing; run the extract stage (`dvc repro extract`)")
    t, metadata = load_tensors_with_metadata(path)
    return t["weights"], float(t["logit_scale"][0]), json.loads(metadata["meta"])


def write_feature_dir(path: Path, tensors: dict[str, torch.Tensor], index: dict, meta: dict) -> None:
    """Write ``features.safetensors`` + ``index.json`` (row order) + ``meta.json`` as one atomic directory."""
    with atomic_directory(path) as tmp:
        atomic_save_tensors(tmp / "features.safetensors", tensors)
        atomic_write_json(tmp / "index.json", index)
        atomic_write_json(tmp / "meta.json", meta)
        seal.seal(tmp)


@dataclass(frozen=True)
class FeatureDir:
    tensors: dict[str, torch.Tensor]
    index: dict
    meta: dict

    def rows(self, split: str, paths: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Row numbers of ``paths`` in the ``split`` listing (error if any image was not extracted)."""
        where = {p: i for i, p in enumerate(self.index[split])}
        missing = [p for p in paths if p not in where]
        if missing:
            raise DataError(
                f"{len(missing)} images (e.g. {missing[0]!r}) have no cached {split} features; "
                "re-run the extract stage (`dvc repro extract`)"
            )
        return torch.tensor([where[p] for p in paths], dtype=torch.long)

    def views(self, group: str, count: int, paths: list[str], pre: bool = False) -> torch.Tensor:
        """Views ``0 .. count - 1`` of ``paths`` in view group ``group`` (:mod:`clipbench.views`): ``[count, N, D]``
        (pre-projection embeddings with ``pre``); an error if any image has fewer cached views."""
        listing = self.index.get(f"views/{group}")
        name = f"{'pre_views' if pre else 'views'}/{group}"
        if listing is None or name not in self.tensors:
            raise DataError(f"the feature cache has no {name} views; re-run the extract stage (`dvc repro extract`)")
        counts = torch.tensor(listing["counts"], dtype=torch.long)
        starts = torch.cumsum(counts, 0) - counts
        where = {p: i for i, p in enumerate(listing["paths"])}
        rows = torch.tensor([where.get(p, -1) for p in paths], dtype=torch.long)
        short = [p for p, r in zip(paths, rows.tolist(), strict=True) if r < 0 or listing["counts"][r] < count]
        if short:
            raise DataError(
                f"{len(short)} images (e.g. {short[0]!r}) have fewer than {count} cached {name} views; "
                "re-run the extract stage (`dvc repro extract`)"
            )
        return self.tensors[name][starts[rows][None, :] + torch.arange(count)[:, None]]


def read_feature_dir(path: Path) -> FeatureDir:
    files = [path / n for n in ("features.safetensors", "index.json", "meta.json")]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"feature cache {path} is incomplete (missing {missing[0].name}); run `dvc repro extract`")
    problem = seal.damage(path)
    if problem:
        raise DataError(f"feature cache {path} is not as written: {problem}; delete it and run `dvc repro`")
    return FeatureDir(load_tensors(files[0]), json.loads(files[1].read_text()), json.loads(files[2].read_text()))
