"""docs/fidelity.md is generated from the paper suite, and every difference from a reference carries its reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from clipbench import fidelity
from clipbench.methods import METHODS


@pytest.fixture(scope="module")
def paper():
    return fidelity.load_paper_suite()


def with_params(suite, method: str, **params):
    """The suite with ``method_params.<method>`` changed (the rest of the paper suite as is)."""
    return replace(suite, method_params={**suite.method_params, method: {**suite.method_params[method], **params}})


def test_fidelity_doc_is_current(paper):
    text = fidelity.DOC.read_text(encoding="utf-8") if fidelity.DOC.is_file() else ""
    assert text == fidelity.render(paper), f"docs/fidelity.md is out of date; run `{fidelity.REGENERATE}`"


def test_every_paper_suite_difference_has_a_documented_reason(paper):
    assert fidelity.problems(fidelity.assess(paper)) == []


def test_every_registered_method_has_a_table(paper):
    verdicts = fidelity.assess(paper)
    assert {v.method for v in verdicts} == set(METHODS.names())


def test_a_changed_learning_rate_is_an_undocumented_difference(paper):
    found = fidelity.problems(fidelity.assess(with_params(paper, "coop", lr=1e-3)))
    assert len(found) == 1 and found[0].startswith("coop: lr: differs from the reference without a documented reason")


def test_a_changed_per_dataset_value_is_caught_where_by_dataset_does_not_cover_it(paper):
    """CLIP-CITE's batch is 32 except EuroSAT (16) and ImageNet (64): changing the default shows on the others."""
    found = fidelity.problems(fidelity.assess(with_params(paper, "clip_cite", batch_size=48)))
    assert [p.split(":")[:2] for p in found] == [["clip_cite", " batch"]]
    assert "48 (others); imagenet: 64; eurosat: 16" in found[0]


def test_a_reason_for_values_that_now_agree_is_reported(paper, monkeypatch):
    setting = fidelity.Setting("x", 1, "[src]", lambda c: 1, "an old reason")
    monkeypatch.setitem(fidelity.REFERENCES, "zeroshot", (setting,))
    found = fidelity.problems(fidelity.assess(paper))
    assert len(found) == 1 and found[0].startswith("zeroshot: x: a reason is written but the values agree")


def test_capping_the_views_of_the_paper_suite_is_an_undocumented_deviation(paper):
    """The paper suite reads one fresh view per epoch/step; a `features.max_views` cap is flagged per method."""
    suite = replace(paper, features=replace(paper.features, max_views=10))
    found = fidelity.problems(fidelity.assess(suite))
    assert sorted(f.split(":")[0] for f in found) == ["clip_adapter", "cocoop", "coop", "prolip"]
    assert all("without a documented reason" in f for f in found)


def test_unspecified_reference_needs_a_decision(paper, monkeypatch):
    setting = fidelity.Setting("x", fidelity.Unspecified("not stated"), "[src]", lambda c: 1)
    monkeypatch.setitem(fidelity.REFERENCES, "zeroshot", (setting,))
    assert fidelity.problems(fidelity.assess(paper)) == [
        "zeroshot: x: unspecified reference: write the decision (reference 'unspecified: not stated', clipbench '1')"
    ]


def test_per_dataset_values_compare_over_the_suite_datasets():
    datasets = ("imagenet", "eurosat", "dtd")
    assert fidelity.expand({"*": 20, "eurosat": 100}, datasets) == {"imagenet": 20, "eurosat": 100, "dtd": 20}
    assert fidelity.show({"imagenet": 20, "eurosat": 100, "dtd": 20}) == "20 (others); eurosat: 100"
    assert [fidelity.num(x) for x in (2e-3, 5e-4, 0.9, 200.0, 1.17, 1e6)] == [
        "2e-3",
        "5e-4",
        "0.9",
        "200",
        "1.17",
        "1000000",
    ]


def test_check_names_the_regenerating_command_when_the_doc_is_stale(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "fidelity.md"
    stale.write_text("# old\n", encoding="utf-8")
    monkeypatch.setattr(fidelity, "DOC", stale)
    monkeypatch.setattr(fidelity, "ROOT", tmp_path)
    assert fidelity.main(["--check"]) == 1
    assert f"fidelity.md is out of date; run `{fidelity.REGENERATE}`" in capsys.readouterr().err
    assert fidelity.main([]) == 0 and fidelity.main(["--check"]) == 0
