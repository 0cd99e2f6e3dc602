"""Computed code dependencies: a cell's code fingerprint covers exactly the modules its method and stage run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipbench.codegraph import PROJECT_ROOT, closure, fingerprint, imports_of
from clipbench.layout import Layout
from clipbench.methods import METHODS
from clipbench.pipeline import code
from clipbench.typed import parse

CELL_STAGES = code.PER_METHOD


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A scratch copy of the importable code (``clipbench/`` and ``stages/``) to edit."""
    root = tmp_path_factory.mktemp("project")
    for package in ("clipbench", "stages"):
        shutil.copytree(PROJECT_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _fingerprints(root: Path) -> dict[tuple[str, str], str]:
    return {(s, m): fingerprint(*code.method_roots(s, m), root=root)["hash"] for s in CELL_STAGES for m in METHODS}


def test_imports_of_another_method_module_are_in_the_closure():
    assert "clipbench.methods.tip_adapter" in closure(*code.method_roots("train", "tip_adapter_f"))
    assert "clipbench.methods.tip_adapter_f" not in closure(*code.method_roots("train", "tip_adapter"))


def test_every_module_edit_changes_exactly_the_methods_whose_closure_holds_it(project):
    """Mutate each module of every method's closure once: its importers' keys change, no other method's do."""
    closures = {(s, m): set(closure(*code.method_roots(s, m), root=project)) for s in CELL_STAGES for m in METHODS}
    before = _fingerprints(project)
    assert len(set(before.values())) == len(before)  # every (stage, method) has its own fingerprint
    for module in sorted(set().union(*closures.values())):
        path = project / (module.replace(".", "/") + ".py")
        path = path if path.is_file() else path.with_suffix("") / "__init__.py"
        original = path.read_text()
        path.write_text(original + "\n_CLOSURE_PROBE = 1\n")
        try:
            after = _fingerprints(project)
        finally:
            path.write_text(original)
        changed = {cell for cell in before if after[cell] != before[cell]}
        assert changed == {cell for cell, mods in closures.items() if module in mods}, module
    assert _fingerprints(project) == before


def test_registering_another_method_or_a_comment_changes_no_fingerprint(project):
    registry = project / "clipbench" / "methods" / "__init__.py"
    original, before = registry.read_text(), _fingerprints(project)
    line = '    "zeroshot": "clipbench.methods.zeroshot:ZeroShotCLIP",\n'
    assert line in original
    registry.write_text(
        original.replace(line, line + '    "new_method": "clipbench.methods.new_method:New",\n    # a comment\n')
    )
    try:
        assert _fingerprints(project) == before
    finally:
        registry.write_text(original)


def test_data_files_of_a_module_are_part_of_its_digest(project):
    templates = project / "clipbench" / "data" / "metadata" / "templates.json"
    original, before = templates.read_text(), fingerprint(*code.method_roots("train", "zeroshot"), root=project)
    templates.write_text(original + " ")
    try:
        after = fingerprint(*code.method_roots("train", "zeroshot"), root=project)
    finally:
        templates.write_text(original)
    assert after["hash"] != before["hash"]
    assert after["modules"]["clipbench.data.metadata"] != before["modules"]["clipbench.data.metadata"]


def test_type_checking_imports_are_not_followed(tmp_path):
    pkg = tmp_path / "clipbench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clipbench import b\n"
        "def f():\n    from clipbench import c\n"
    )
    (pkg / "b.py").write_text("")
    (pkg / "c.py").write_text("")
    assert imports_of("clipbench.a", root=tmp_path) == {"clipbench", "clipbench.c"}


def test_static_closure_covers_every_module_python_imports():
    """What importing the stage and method modules really loads is inside the computed closure."""
    roots = sorted({r for s in CELL_STAGES for m in METHODS for r in code.method_roots(s, m)})
    script = (
        f"import importlib, sys\nfor r in {roots!r}: importlib.import_module(r)\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('clipbench', 'stages')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    static = set(closure(*roots))
    assert set(loaded) - static == set()


def test_code_stage_writes_the_fingerprints_the_cell_keys_use(tmp_path):
    from clipbench.config import SuiteConfig

    from conftest import tiny_params

    cfg = parse(SuiteConfig, tiny_params(), "params")
    layout = Layout(tmp_path)
    assert code.run(cfg=cfg, layout=layout)["fingerprints"] == len(code.planned_files(cfg, layout))
    for stage in CELL_STAGES:
        for method in cfg.methods:
            written = json.loads(layout.code(stage, method).read_text())
            assert written["hash"] == code.method_code(stage, method)
    assert sorted(p.name for p in (tmp_path / "code" / "download").iterdir()) == sorted(
        f"{d}.json" for d in cfg.all_datasets()
    )
