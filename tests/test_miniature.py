"""The miniature paper-shaped suite (real ViT-B/16 architecture, random weights) through the real stage functions.

On a CPU it runs on EuroSAT's 10 classes only (few-shot and base-to-new, every registered method, one or two
steps each): the ViT-B/16 passes cost seconds each there. ``scripts/gpu_check.sh`` runs the same function on the
GPU with ImageNet's 1,000 classes, transfer and the ImageNet targets.
"""

from __future__ import annotations

import pytest

from clipbench import miniature
from clipbench.methods import METHODS

from coop_fixtures import write_coop_root


@pytest.mark.slow
def test_miniature_suite_runs_every_method_on_vitb16(tmp_path):
    data_root = write_coop_root(tmp_path / "coop")
    out = miniature.run(tmp_path / "work", data_root, ["eurosat"], [], device="cpu", log=lambda _: None)
    for name in METHODS.names():
        assert f"evaluate {name}" in out["seconds"]
    assert out["results"] > 0
