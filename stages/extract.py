"""Extract cached embeddings of one dataset under one backbone (--test-only for domain-shift targets)."""

from pathlib import Path

from clipbench.pipeline import extract
from stages._common import main, parser

if __name__ == "__main__":
    p = parser(__doc__, "backbone", "dataset")
    p.add_argument("--test-only", action="store_true")
    main(
        lambda a, cfg, layout: extract.run(
            backbone=a.backbone,
            dataset=a.dataset,
            cfg=cfg,
            layout=layout,
            data_root=Path(cfg.data_root),
            test_only=a.test_only,
        ),
        p,
    )
