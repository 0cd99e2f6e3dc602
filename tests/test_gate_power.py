"""`clipbench bench --gate`: the planted-bug catalogue stays applicable, and the mechanics work on a tiny suite."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from clipbench.bench import gate_power as g
from clipbench.bench.report import replace_section
from clipbench.codegraph import module_path
from clipbench.config import load_suite
from clipbench.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("bug", g.CATALOGUE, ids=lambda b: b.name)
def test_each_bug_applies_once_and_changes_the_code(tmp_path, bug):
    (tmp_path / bug.path).parent.mkdir(parents=True)
    (tmp_path / bug.path).write_text((ROOT / bug.path).read_text())
    g.plant(tmp_path, bug)
    before, after = ast.parse((ROOT / bug.path).read_text()), ast.parse((tmp_path / bug.path).read_text())
    assert ast.dump(before) != ast.dump(after)
    with pytest.raises(Exception, match="occurs 0 times"):
        g.plant(tmp_path, bug)


def test_catalogue_covers_every_method_family_and_the_shared_code():
    assert len(g.CATALOGUE) >= 12
    families = {b.family for b in g.CATALOGUE}
    assert {"k-shot sampler", "base/new split", "text classifier", "evaluation"} <= families
    planted = {b.path for b in g.CATALOGUE}
    # zero-shot CLIP has no logic of its own beyond the text classifier and evaluation, which have their own bugs
    for name in set(METHODS.names()) - {"zeroshot"}:
        assert str(module_path(METHODS.module_of(name)).relative_to(ROOT)) in planted, name


def test_gate_suite_is_a_valid_reduced_suite_without_tracking(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    suite = g.gate_suite(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(suite))
    cfg = load_suite(tmp_path / "params.yaml")
    assert list(cfg.methods) == list(load_suite(ROOT / "params.yaml").methods)
    assert suite["tracking"]["enabled"] is False and len(cfg.datasets) == 1


def test_section_is_replaced_in_place():
    report = "# bench\n\n## (a) x\n\nA\n\n## (h) Gate power: planted bugs\n\nold\n\n## (i) later\n\nI\n"
    new = "## (h) Gate power: planted bugs\n\nnew\n"
    out = replace_section(report, new)
    assert "old" not in out and "new" in out and out.index("new") < out.index("## (i) later")
    assert replace_section("", new) == new


@pytest.mark.slow
def test_gate_power_catches_a_planted_bug_and_not_a_clean_rerun(tmp_path):
    """A tiny reduced suite (zero-shot and CLIP-Adapter, one shot count and seed) and one planted bug."""
    from clipbench.suites import Reduction

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["methods"] = ["zeroshot", "clip_adapter"]
    suite = g.gate_suite(params, Reduction(shots=(2,), seeds=(1,)))
    bug = next(b for b in g.CATALOGUE if b.path.endswith("clip_adapter.py"))
    result = g.gate_power(ROOT, tmp_path, suite, bugs=(bug,), log=lambda _: None)
    assert not result["clean"]["caught"], result["clean"]
    (row,) = result["bugs"]
    assert row["caught"] and row["exit"] == 1 and row["metrics"] + row["invariants"] > 0, row
    assert "## (h) Gate power" in g.render(result)
