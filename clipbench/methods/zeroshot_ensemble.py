"""Zero-shot CLIP with a prompt ensemble (CoOp ``trainers/zsclip.py`` ZeroshotCLIP2; Tip-Adapter/ProLIP ImageNet).

The text classifier of each target is re-encoded through the backbone from the seven "IMAGENET_TEMPLATES_SELECT"
templates of the CLIP prompt-engineering notebook plus, for datasets outside the ImageNet family, the target's own
templates (its ``templates`` recipe, by default the suite's ``text.template_set``, normally the per-dataset custom
template; :mod:`clipbench.recipes`): 8 templates there,
7 on ImageNet and its variants (spec §2.4). Templates are ensembled by normalise-average-normalise; logits
``s * cos(f(x), t_c)``. Nothing is trained; no selection.

This is a separate registry key rather than an option of ``zeroshot`` so that both rows appear in one table
(``zeroshot`` uses the classifier of its recipe cached by the extract stage). The template list lives here, not in
``templates.json``.

Deviations: none (CoOp's class-level template list that grows with every instantiation is not replicated;
a target template that is already among the seven is not added twice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipbench.data import imagenet_family_datasets
from clipbench.data.base import LabelSpace
from clipbench.methods.base import EvalTarget, FitTask, Inputs, Method, MethodConfig
from clipbench.methods.work import Arch, EncoderWork, TargetShape

IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


@dataclass(frozen=True)
class ZeroShotEnsembleConfig(MethodConfig):
    add_dataset_templates: bool = True  # ZeroshotCLIP2: the target's own templates join the seven


def ensemble_templates(space: LabelSpace, cfg: ZeroShotEnsembleConfig) -> tuple[str, ...]:
    """The seven templates, plus the space's own ones outside the ImageNet family (no duplicates)."""
    extra = space.templates if cfg.add_dataset_templates and space.dataset not in imagenet_family_datasets() else ()
    return tuple(dict.fromkeys(IMAGENET_TEMPLATES_SELECT + tuple(extra)))


class ZeroShotEnsemble(Method):
    """Zero-shot CLIP with the CoOp ZeroshotCLIP2 prompt ensemble."""

    name = "zeroshot_ensemble"
    requires = Inputs.FEATURES
    uses_backbone = True
    Config = ZeroShotEnsembleConfig

    @classmethod
    def eval_work(cls, config: ZeroShotEnsembleConfig, target: TargetShape, arch: Arch) -> EncoderWork:
        """The seven ImageNet templates per class (the dataset's own templates add a few more)."""
        return EncoderWork(frozen_prompts=target.classes * len(IMAGENET_TEMPLATES_SELECT))

    def fit(self, task: FitTask) -> dict[str, float | int]:
        return {}

    def text_classifier(self, target: EvalTarget) -> torch.Tensor:
        backbone = target.backbone
        if backbone is None:
            raise ValueError(f"{self.name} encodes prompts and needs the backbone; the pipeline passed none")
        space = target.space
        ensemble = LabelSpace(space.dataset, space.class_ids, space.classnames, ensemble_templates(space, self.config))
        return backbone.text_classifier(ensemble.prompts())

    def predictor(self, target: EvalTarget):
        text = self.text_classifier(target).to(target.text_weights.device)
        return lambda x: target.logit_scale * F.normalize(x.float(), dim=-1) @ text.T

    def predict(self, x: torch.Tensor, target: EvalTarget) -> torch.Tensor:
        return self.predictor(target)(x)
