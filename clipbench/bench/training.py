"""(c) Training on cached features against the same training re-encoding its images every step."""

from __future__ import annotations

from pathlib import Path

import torch

from clipbench import features
from clipbench.bench.instruments import random_backbone, timed
from clipbench.bench.sizes import BenchSize


class ReencodedViews:
    """Stand-in for a view cache that re-decodes, re-augments and re-encodes every image on each access.

    ``views[i]`` costs what one epoch (or one full-batch step) of a reference harness costs in image work.
    """

    def __init__(
        self,
        bb,
        image_dir: Path,
        paths: list[str],
        count: int,
        scale: tuple[float, float],
        pre: bool,
        batch_size: int = 256,
    ) -> None:
        self.bb, self.image_dir, self.paths, self.count = bb, image_dir, paths, count
        self.scale, self.pre, self.batch_size, self.encoded = scale, pre, batch_size, 0

    def __len__(self) -> int:
        return self.count

    def float(self) -> ReencodedViews:
        """The tensor calls a method makes on its view cache (``.float().clone()``) keep the stand-in."""
        return self

    clone = float

    def __getitem__(self, i: int) -> torch.Tensor:
        from clipbench.data.images import augmented_view, open_rgb, to_normalised_tensor, view_rng

        visual, out = self.bb.model.visual, []
        for start in range(0, len(self.paths), self.batch_size):
            chunk = self.paths[start : start + self.batch_size]
            pixels = torch.stack(
                [
                    to_normalised_tensor(
                        augmented_view(
                            open_rgb(self.image_dir / p), self.bb.image_size, self.scale, view_rng(p, 1000 + i, 0)
                        ),
                        visual.image_mean,
                        visual.image_std,
                    )
                    for p in chunk
                ]
            )
            pre, proj = self.bb.encode_images_with_pre(pixels)
            out.append(pre if self.pre else proj)
        self.encoded += len(self.paths)
        return torch.cat(out)


def render_toy_images(root: Path, classes: int, shots: int) -> tuple[list[str], torch.Tensor, list[str]]:
    """``shots`` rendered ``toy_objects`` train images for each of the first ``classes`` classes (PNG)."""
    from PIL import Image

    from clipbench.data.toy import suite

    defn = suite.TOY_DATASETS["toy_objects"]
    paths, labels = [], []
    for label, cls in enumerate(defn.classes[:classes]):
        (root / cls.class_id).mkdir(parents=True, exist_ok=True)
        for i in range(shots):
            rng = suite.image_rng(defn.name, "train", label, i)
            rel = f"{cls.class_id}/{i}.png"
            Image.fromarray(suite.world.render(defn.scene(cls, rng), rng)).save(root / rel)
            paths.append(rel)
            labels.append(label)
    return paths, torch.tensor(labels), [c.classname for c in defn.classes[:classes]]


def _task(space, plain: torch.Tensor, views, labels: torch.Tensor, text, bb, shots: int):
    from clipbench.methods import FeatureSet, FitTask

    return FitTask(
        space, FeatureSet(plain, labels, views), FeatureSet(plain, labels), text, bb.logit_scale, shots, 1, backbone=bb
    )


def _fit_seconds(method, space, plain, views, labels, text, bb, shots: int) -> float:
    return timed(method.fit, _task(space, plain, views, labels, text, bb, shots))[0]


def training_speedup(work: Path, size: BenchSize) -> list[dict]:
    """CLIP-Adapter and ProLIP (the real method classes): cached views vs re-encoding every epoch / iteration."""
    from clipbench.data import LabelSpace
    from clipbench.methods.clip_adapter import ClipAdapter, ClipAdapterConfig
    from clipbench.methods.prolip import Prolip, ProlipConfig

    bb = random_backbone("clipbench-toy-vit", "toy_vit")
    paths, labels, names = render_toy_images(work, size.train_classes, size.train_shots)
    space = LabelSpace("toy_objects", tuple(names), tuple(names), ("a photo of a {}.",))
    text = bb.text_classifier(space.prompts()).clone()
    counter = features.EncodeCounter()
    spec = features.ViewSpec(size.train_views, (0.5, 1.0), 0)
    t_extract, enc = timed(features.encode_paths, bb, work, paths, 256, spec, counter)
    enc = features.Encoded(*(t.clone() for t in (enc.plain, enc.pre, enc.views, enc.pre_views)))  # as if loaded
    task = (space, labels, text, bb, size.train_shots)
    epochs, it = size.adapter_epochs, size.prolip_iterations
    adapter = lambda: ClipAdapter(ClipAdapterConfig(epochs=epochs))  # noqa: E731
    prolip = lambda: Prolip(ProlipConfig(steps=it))  # noqa: E731
    re_adapter = ReencodedViews(bb, work, paths, epochs, (0.08, 1.0), pre=False)
    re_prolip = ReencodedViews(bb, work, paths, it, (0.5, 1.0), pre=True)
    t_adapter = _fit_seconds(adapter(), task[0], enc.plain, enc.views, *task[1:])
    t_adapter_re = _fit_seconds(adapter(), task[0], enc.plain, re_adapter, *task[1:])
    t_prolip = _fit_seconds(prolip(), task[0], enc.pre, enc.pre_views, *task[1:])
    t_prolip_re = _fit_seconds(prolip(), task[0], enc.pre, re_prolip, *task[1:])
    common = {"images": len(paths), "extract_s": t_extract, "cached_encoded": counter.encoded}
    return [
        {
            "method": "CLIP-Adapter (real class)",
            "steps": f"{epochs} epochs",
            **common,
            "n_steps": epochs,
            "reference_steps": 200,
            "cached_train_s": t_adapter,
            "reencode_s": t_adapter_re,
            "reencode_encoded": re_adapter.encoded,
        },
        {
            "method": "ProLIP (real class)",
            "steps": f"{it} full-batch iterations",
            **common,
            "n_steps": it,
            "reference_steps": 300,
            "cached_train_s": t_prolip,
            "reencode_s": t_prolip_re,
            "reencode_encoded": re_prolip.encoded,
        },
    ]
