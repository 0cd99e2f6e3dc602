"""Prepare one backbone's local checkpoint (download a hub tag or pretrain the toy model)."""

from clipbench.pipeline import backbone
from stages._common import main, parser

if __name__ == "__main__":
    main(
        lambda a, cfg, layout: backbone.run(backbone=a.backbone, pretrain_config=cfg.toy_pretrain, layout=layout),
        parser(__doc__, "backbone"),
    )
