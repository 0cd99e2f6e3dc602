"""Evaluate one method's trained cells on every protocol's test sets."""

from clipbench.pipeline import evaluate
from stages._common import main, parser

if __name__ == "__main__":
    main(
        lambda a, cfg, layout: evaluate.run(backbone=a.backbone, method=a.method, cfg=cfg, layout=layout),
        parser(__doc__, "backbone", "method"),
    )
