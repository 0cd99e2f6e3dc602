"""Stage start-up stays light: heavy libraries are imported only by the code that uses them.

Every DVC stage is a fresh process; open_clip (which imports torchvision and with it ``torch._dynamo``) and
scikit-learn cost seconds each, so stage modules and suite loading must not import them. Checked in a
subprocess because this test session has imported them already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("open_clip", "torchvision", "sklearn")
PROBE = """
import importlib, json, sys
params, check, *modules = sys.argv[1:]
for name in modules:
    importlib.import_module(name)
if params:
    from clipbench.config import load_suite
    load_suite(params)
print(json.dumps(sorted(m for m in check.split(",") if m in sys.modules)))
"""


def imported(modules: list[str], check: tuple[str, ...] = HEAVY, params: Path | None = None) -> list[str]:
    """Which of ``check`` a fresh interpreter holds after importing ``modules`` (and loading ``params``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(params or ""), ",".join(check), *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("stage", ["download", "split", "aggregate", "track", "train", "evaluate"])
def test_stage_modules_import_no_model_library(stage):
    assert imported(["clipbench.config", f"stages.{stage}"]) == []


def test_loading_the_suite_imports_no_model_library():
    """``load_suite`` imports every registered method module (for its Config); none may pull them in."""
    assert imported(["stages._common"], params=ROOT / "params.yaml") == []


def test_backbone_registry_needs_neither_torch_nor_open_clip():
    assert imported(["clipbench.backbones"], check=("torch", "open_clip")) == []


def test_loading_a_backbone_module_still_does_not_import_open_clip():
    """``clipbench.backbones.spec`` (the Backbone class) imports open_clip only when a model is created."""
    assert imported(["clipbench.backbones.spec", "clipbench.features"]) == []
