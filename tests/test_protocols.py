"""Protocols are registered objects: each yields cells, table entries and a title, and the reports they produce
are byte-identical to those of the hand-written code they replaced."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from clipbench import report
from clipbench.config import load_suite
from clipbench.pipeline import aggregate
from clipbench.protocols import REGISTRY, Protocols, all_protocols, eval_cells, get_protocol

from test_report import _vit_b16, make_results

ROOT = Path(__file__).resolve().parents[1]
DIGESTS = Path(__file__).parent / "data" / "report_digests.json"


@pytest.fixture(scope="module")
def suite():
    return load_suite(ROOT / "params.yaml")


@pytest.mark.parametrize("name", REGISTRY.in_order())
def test_every_registered_protocol_yields_cells_entries_and_a_title(name, suite):
    p = get_protocol(name)
    assert p.name == name and p.title.strip()
    assert name in suite.protocols, f"enable protocols.{name} in params.yaml so the toy suite runs it"
    cells = p.cells(suite.protocols[name])
    assert cells and {c.protocol for c in cells} == {name}
    plan = aggregate.expected_rows(suite)
    plan = plan[(plan.protocol == name) & (plan.method == "zeroshot")]
    results = plan.assign(value=np.random.default_rng(0).uniform(20, 90, len(plan)), status="ok")
    entries = p.entries(report.cell_stats(report.complete(results, plan)))
    assert {e["protocol"] for e in entries} == {name} and {"cell", "average"} <= {e["kind"] for e in entries}
    assert all(e["status"] == "ok" and not math.isnan(e["mean"]) for e in entries)
    table = report.wide_table(report.entries(report.cell_stats(results)), name)
    assert list(table.columns[: len(p.table_keys)]) == list(p.table_keys) and len(table) > 0


def test_protocols_section_keeps_registry_order_and_skips_disabled_ones(suite):
    configs = dict(suite.protocols)
    reordered = Protocols({k: configs[k] for k in reversed(configs)})
    assert list(reordered) == [n for n in REGISTRY.in_order() if n in configs]
    only = Protocols.from_plain({"few_shot": {"datasets": ["toy_objects"]}, "base2new": None}, "protocols")
    assert list(only) == ["few_shot"] and only["few_shot"].shots == (1, 2, 4, 8, 16)


def test_eval_cells_follow_the_registry_order(suite):
    names = [c.protocol for c in eval_cells(suite)]
    assert list(dict.fromkeys(names)) == [p.name for p in all_protocols() if p.name in suite.protocols]


def test_published_rules_belong_to_the_protocols():
    avg = {"column": "average", "source": "imagenet"}
    classification = ";".join(sorted(get_protocol("few_shot").published_average()))
    assert get_protocol("few_shot").published_comparable({**avg, "datasets": classification})
    assert not get_protocol("few_shot").published_comparable({**avg, "datasets": "dtd;eurosat"})
    assert not get_protocol("cross_dataset").published_comparable({"column": "dtd", "source": "caltech101"})
    assert get_protocol("domain_generalization").published_comparable({"column": "imagenet_a", "source": "imagenet"})


def _scenarios(tmp_path):
    """The reports of two synthetic result tables: n/a, failed and missing cells (A); published numbers (B)."""
    from clipbench import reference

    r = make_results(methods=("zeroshot", "clip_adapter", "linear_probe"), na_new=("linear_probe",))
    i = r[
        (r.protocol == "cross_dataset") & (r.method == "zeroshot") & (r.dataset == "toy_scenes") & (r.seed == 1)
    ].index
    r.loc[i, ["status", "value"]] = ["failed", math.nan]
    drop = r[(r.protocol == "few_shot") & (r.method == "clip_adapter") & (r.shots == 4) & (r.seed == 2)].index
    aggregate.write_tables(
        r.drop(index=drop), r, tmp_path / "A", suite="A", template_set="custom", method_notes="notes\n"
    )
    rb = make_results(
        methods=("zeroshot", "coop"),
        backbone=_vit_b16(),
        datasets=list(reference.CLASSIFICATION),
        shots=(1, 16),
        source="imagenet",
        targets=["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"],
    )
    aggregate.write_tables(rb, None, tmp_path / "B", suite="B", template_set="custom")


def test_reports_are_byte_identical_to_the_recorded_ones(tmp_path):
    """Digests recorded from the reports of the code before protocols became registered objects; a deliberate
    change of a table's format updates ``tests/data/report_digests.json`` in the same commit."""
    _scenarios(tmp_path)
    got = {
        p.relative_to(tmp_path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(tmp_path.rglob("*"))
        if p.suffix in (".md", ".csv", ".json")
    }
    want = json.loads(DIGESTS.read_text())
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []


def test_a_protocol_without_cells_gets_no_table(tmp_path):
    from clipbench.pipeline import track

    results = make_results(methods=("zeroshot",))
    aggregate.write_tables(results[results.protocol != "base2new"], None, tmp_path, suite="t", template_set="custom")
    assert sorted(p.stem for p in (tmp_path / "tables").glob("*.md")) == [
        "cross_dataset",
        "domain_generalization",
        "few_shot",
    ]
    assert get_protocol("base2new").title not in (tmp_path / "summary.md").read_text()
    assert set(track.report_entries(tmp_path).protocol) == {"few_shot", "cross_dataset", "domain_generalization"}
