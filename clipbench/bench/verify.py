"""(g) The cost of verified reads: hashing every artifact a stage reads, against the reduced toy suite's time.

Each reader checks what it loads against the hash recorded when it was written (safetensors content hashes,
``seal.json`` of feature and cell directories; :mod:`clipbench.seal`). This measures one verification of every
artifact in the workspace ``dvc repro`` of section (d) left behind and scales it by how many stage processes read
each kind (feature directories and text classifiers: every train and evaluate stage of every method; a trained cell:
its train and evaluate stage; an evaluation cell: its stage), an upper bound of what the suite spent on it.
"""

from __future__ import annotations

import time
from pathlib import Path

from clipbench import seal
from clipbench.io import load_tensors


def _time(paths: list[Path], verify) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for path in paths:
        verify(path)
    return time.perf_counter() - start


def verify_cost(workspace: Path, repro_wall_s: float, methods: int) -> dict:
    """Seconds to verify every artifact once, the reader-weighted total and its share of ``repro_wall_s``."""
    sealed = sorted(p.parent for p in Path(workspace).rglob(seal.SEAL_FILE))
    features = [d for d in sealed if "features" in d.parts]
    cells = [d for d in sealed if "features" not in d.parts]
    texts = sorted(Path(workspace, "features").rglob("text.safetensors"))
    feature_s = _time(features, seal._compare_all) + _time(texts, load_tensors)
    cell_s = _time(cells, seal._compare_all)
    weighted = feature_s * 2 * methods + cell_s * 2
    return {
        "feature_dirs": len(features) + len(texts),
        "cells": len(cells),
        "feature_s": feature_s,
        "cell_s": cell_s,
        "weighted_s": weighted,
        "repro_wall_s": repro_wall_s,
        "share": weighted / repro_wall_s if repro_wall_s else 0.0,
    }
