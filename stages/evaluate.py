"""Evaluate one method's trained cells on every protocol's test sets."""

from stages._common import main, parser

from clipbench.pipeline import evaluate

if __name__ == "__main__":
    main(lambda a, cfg, layout: evaluate.run(backbone=a.backbone, method=a.method, cfg=cfg, layout=layout),
         parser(__doc__, "backbone", "method"))
