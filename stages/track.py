"""Log the aggregated results to MLflow (a store that cannot be reached only warns)."""

from clipbench.pipeline import track
from stages._common import main, parser

if __name__ == "__main__":
    main(lambda a, cfg, layout: track.run(cfg=cfg, layout=layout), parser(__doc__))
