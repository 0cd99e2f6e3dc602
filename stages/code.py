"""Write the code fingerprint of every stage, method and dataset (computed from the import graph)."""

from clipbench.pipeline import code
from stages._common import main, parser

if __name__ == "__main__":
    main(lambda a, cfg, layout: code.run(cfg=cfg, layout=layout), parser(__doc__))
