"""Log the aggregated results to MLflow (a store that cannot be reached only warns)."""

from stages._common import main, parser

from clipbench.pipeline import track

if __name__ == "__main__":
    main(lambda a, cfg, layout: track.run(cfg=cfg, layout=layout), parser(__doc__))
