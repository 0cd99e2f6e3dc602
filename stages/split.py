"""Write the K-shot split manifests of one dataset."""

from clipbench.pipeline import split
from stages._common import main, parser

if __name__ == "__main__":
    main(lambda a, cfg, layout: split.run(dataset=a.dataset, cfg=cfg, layout=layout), parser(__doc__, "dataset"))
