"""Zero-shot CLIP (Radford et al., 2021; CoOp ``trainers/zsclip.py``), the reference floor of every table.

Logits are ``s * cos(f(x), t_c)`` with ``s`` the backbone's logit scale (100 for OpenAI checkpoints) and
``t_c`` the normalise-average-normalise text classifier of the dataset's templates (spec §2.4, §6.1).
Nothing is trained. Deviations: none; the template set is chosen by the suite's ``text.template_set``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipbench.methods.base import EvalTarget, FitTask, Method, MethodConfig


@dataclass(frozen=True)
class ZeroShotConfig(MethodConfig):
    """Zero-shot CLIP has no hyper-parameters."""


def zero_shot_logits(x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
    """``s * normalise(x) @ normalise(t).T`` for raw embeddings ``x``."""
    return target.logit_scale * F.normalize(x.float(), dim=-1) @ target.text_weights.T


class ZeroShotCLIP(Method):
    """Zero-shot CLIP with hand-crafted prompts."""

    name = "zeroshot"
    Config = ZeroShotConfig

    def fit(self, task: FitTask) -> dict[str, float | int]:
        return {}

    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        return zero_shot_logits(x, target)
