"""The data loader (``runtime.decode_workers``): worker processes return exactly what the in-process path returns."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from clipbench import features
from clipbench.config import SuiteConfig
from clipbench.data.imageset import ImageSet
from clipbench.data.loader import Augment, load_batches, pil_stage, to_model_input, to_uint8, training_batches
from clipbench.errors import ConfigError, DataError
from clipbench.methods import METHODS, Inputs
from clipbench.runtime import RuntimeConfig
from clipbench.typed import parse

from conftest import encoder_task, tiny_params


def _square(i: int) -> torch.Tensor:
    return torch.full((2,), float(i * i))


def test_load_batches_keeps_order_for_any_worker_count():
    here = [t.tolist() for t in load_batches(_square, 7)]
    assert here == [[float(i * i)] * 2 for i in range(7)]
    assert [t.tolist() for t in load_batches(_square, 7, workers=2)] == here
    assert [t.tolist() for t in load_batches(_square, 7, overlap=True)] == here


def _broken(i: int) -> int:
    if i == 2:
        raise DataError("image x/2.png is corrupt or not an image; replace the file")
    return i


def test_a_worker_error_comes_back_as_the_same_one_line_error():
    seen = []
    with pytest.raises(DataError) as info:
        for item in load_batches(_broken, 5, workers=2):
            seen.append(item)
    assert str(info.value) == "image x/2.png is corrupt or not an image; replace the file"
    assert seen == [0, 1]


def test_uint8_hand_over_equals_torchvision_bit_for_bit():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    ours = to_model_input(to_uint8(img)[None], mean, std, torch.device("cpu"))[0]
    assert torch.equal(ours, TF.normalize(TF.to_tensor(img), list(mean), list(std)))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, encoder_task(root, n_classes=3, shots=3)


def test_extraction_with_workers_equals_the_in_process_and_float_paths(encoder):
    root, t = encoder
    bb, paths = t["backbone"], list(t["tasks"]["images"].train_images.paths)
    assert pil_stage(bb.preprocess) is not None  # open_clip's eval transform: the uint8 hand-over is used
    views = features.ViewSpec(2, (0.5, 1.0), 0)
    here = features.encode_paths(bb, root, paths, 4, views)
    workers = features.encode_paths(bb, root, paths, 4, views, workers=2)
    for name in ("plain", "pre", "views", "pre_views"):
        assert torch.equal(getattr(here, name), getattr(workers, name)), name
    host = torch.stack([bb.preprocess(Image.open(root / p).convert("RGB")) for p in paths])  # fp32 on the host
    assert torch.equal(here.plain, torch.cat([bb.encode_images(host[i : i + 4]) for i in range(0, len(paths), 4)]))


def test_training_batches_with_workers_equal_in_process(encoder):
    _, t = encoder
    images: ImageSet = t["tasks"]["images"].train_images
    augment = Augment(32, (0.08, 1.0), (0.5,) * 3, (0.25,) * 3)
    batches = [torch.tensor([3, 0, 5]), torch.tensor([1, 8]), torch.tensor([2, 4, 6, 7])]
    here = list(training_batches(images, batches, augment, np.random.default_rng(7)))
    apart = list(training_batches(images, batches, augment, np.random.default_rng(7), workers=2))
    assert len(here) == len(apart) == 3
    for (pa, ya), (pb, yb) in zip(here, apart, strict=True):
        assert torch.equal(pa, pb) and torch.equal(ya, yb)
    other = list(training_batches(images, batches, augment, np.random.default_rng(8)))
    assert not torch.equal(other[0][0], here[0][0])  # the draws come from the generator


@pytest.mark.parametrize("name", [m for m in METHODS.names() if METHODS.get(m).requires is Inputs.IMAGES])
def test_image_methods_train_the_same_with_decode_workers(encoder, name):
    _, t = encoder
    task = t["tasks"]["images"]
    cls = METHODS.get(name)
    states = []
    for workers in (0, 2):
        model = cls(cls.Config(**{**cls.smoke, "epochs": 2}))
        model.fit(replace(task, runtime=RuntimeConfig(decode_workers=workers)))
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_decode_workers_inside_the_processes_executor_is_refused():
    params = tiny_params(runtime={"executor": "processes", "decode_workers": 2})
    with pytest.raises(ConfigError, match=r"runtime.decode_workers: .*set decode_workers: 0 or executor: serial"):
        parse(SuiteConfig, params, "params.yaml")
