"""Stage ``backbone``: prepare a backbone's local checkpoint (download a hub tag, or pretrain the toy model)."""

from __future__ import annotations

from pathlib import Path

from clipbench.backbones import get_backbone, prepare_backbone
from clipbench.backbones.toy_pretrain import ToyPretrainConfig, pretrain
from clipbench.io import atomic_directory
from clipbench.layout import Layout


def run(*, backbone: str, pretrain_config: ToyPretrainConfig, layout: Layout, cache_dir: Path | None = None) -> Path:
    spec = get_backbone(backbone)
    with atomic_directory(layout.backbone(backbone)) as tmp:
        if spec.source == "toy":
            pretrain(spec, pretrain_config, tmp)
        else:
            prepare_backbone(spec, tmp, cache_dir)
    return layout.backbone(backbone)
