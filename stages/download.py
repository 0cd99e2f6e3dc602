"""Download (or generate) one dataset under data_root and write its validated index."""

from pathlib import Path

from clipbench.pipeline import download
from stages._common import main, parser

if __name__ == "__main__":
    main(
        lambda a, cfg, layout: download.run(
            dataset=a.dataset,
            data_root=Path(cfg.data_root),
            layout=layout,
            counts=cfg.data_counts,
            image_check=cfg.image_check,
            overlap=cfg.train_test_overlap,
        ),
        parser(__doc__, "dataset"),
    )
