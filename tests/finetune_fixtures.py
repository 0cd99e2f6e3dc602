"""Scaffolding shared by the tests of the image fine-tuning methods (ClipFit, CLIP-CITE)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch

from clipbench.data import LabelSpace
from clipbench.errors import ConfigError
from clipbench.methods import EvalTarget
from clipbench.methods.training import ImageFineTuning
from clipbench.runtime import RuntimeConfig
from clipbench.typed import parse

from conftest import encoder_task


def image_task(tmp_path_factory, name: str) -> dict:
    """The shared tiny image task (``encoder_task``: 4 classes, 4 shots) in its own temporary folder."""
    return encoder_task(tmp_path_factory.mktemp(name), n_classes=4, shots=4)


def maker(method: type[ImageFineTuning], **defaults: Any) -> Callable[..., ImageFineTuning]:
    """``make(**overrides)``: the method with its Config parsed from ``defaults`` updated by ``overrides``."""

    def make(**overrides: Any) -> ImageFineTuning:
        return method(parse(method.Config, {**defaults, **overrides}, f"test {method.name}"))

    return make


def target(data: dict, space: LabelSpace | None = None) -> EvalTarget:
    """An evaluation target in ``space`` (default: the training space), trained on the task's space."""
    task = data["tasks"]["images"]
    space = space or task.space
    return EvalTarget(space, task.text_weights[: len(space)], task.logit_scale, task.space, backbone=data["backbone"])


def check_state_round_trip(make: Callable[..., ImageFineTuning], data: dict) -> None:
    """A fresh method given the fitted state predicts exactly what the fitted method predicts."""
    fitted = make(epochs=1)
    fitted.fit(data["tasks"]["images"])
    restored = make(epochs=1)
    with pytest.raises(RuntimeError, match="before predicting"):
        restored.predictor(target(data))
    restored.load_state_dict(fitted.state_dict())
    x = data["x"]["images"]
    assert torch.allclose(restored.predictor(target(data))(x), fitted.predictor(target(data))(x), atol=1e-5)


def check_runtime_is_not_a_method_setting(make: Callable[..., ImageFineTuning], data: dict) -> None:
    """The Config refuses ``device``/``precision``; ``fit`` and ``predictor`` take the device from the runtime."""
    for key, value in (("device", "cpu"), ("precision", "fp32")):
        with pytest.raises(ConfigError, match="unknown key"):
            make(**{key: value})
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA: asking for cuda must fail")
    cuda = RuntimeConfig(device="cuda")
    with pytest.raises(ConfigError, match="no CUDA device"):
        make(epochs=1).fit(replace(data["tasks"]["images"], runtime=cuda))
    fitted = make(epochs=1)
    fitted.fit(data["tasks"]["images"])
    fitted.load_state_dict(fitted.state_dict())  # drops the trained model: the predictor rebuilds it
    with pytest.raises(ConfigError, match="no CUDA device"):
        fitted.predictor(replace(target(data), runtime=cuda))
