"""Train one method on every planned cell of one source dataset."""

from clipbench.pipeline import train
from stages._common import main, parser

if __name__ == "__main__":
    main(
        lambda a, cfg, layout: train.run(
            backbone=a.backbone, method=a.method, dataset=a.dataset, cfg=cfg, layout=layout
        ),
        parser(__doc__, "backbone", "method", "dataset"),
    )
