"""Aggregate every method's results into reports/ (tables, Parquet, DVC metrics)."""

from clipbench.pipeline import aggregate
from stages._common import main, parser

if __name__ == "__main__":
    main(lambda a, cfg, layout: aggregate.run(cfg=cfg, layout=layout), parser(__doc__))
