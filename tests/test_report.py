"""Report tables: every number recomputes from the result rows; missing cells and averages are marked."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from clipbench import reference
from clipbench.backbones.spec import BACKBONES
from clipbench.pipeline import aggregate
from clipbench.protocols import get_protocol
from clipbench.protocols.entries import harmonic
from clipbench.results import COLUMNS

DATASETS = ["toy_objects", "toy_textures", "toy_scenes"]
TARGETS = ["toy_objects_sketch", "toy_objects_noisy"]


def make_results(
    methods=("zeroshot", "clip_adapter"),
    backbone="toy_vit",
    datasets=DATASETS,
    shots=(1, 4, 16),
    seeds=(1, 2, 3),
    source="toy_objects",
    targets=TARGETS,
    b2n_shots=16,
    na_new=(),
    seed=0,
):
    """Result rows in the results schema for all four protocols, with random accuracies."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(method, protocol, src, subset, k, s, dataset, dsubset, metric, status="ok"):
        value = float(rng.uniform(20, 90)) if status == "ok" else math.nan
        rows.append(
            {
                "method": method,
                "backbone": backbone,
                "protocol": protocol,
                "source": src,
                "train_subset": subset,
                "shots": k,
                "seed": s,
                "dataset": dataset,
                "subset": dsubset,
                "metric": metric,
                "value": value,
                "status": status,
                "n": 100,
                "note": "",
                "config_hash": f"cfg-{method}",
                "split_hash": f"split-{src}-{k}-{s}",
                "feature_key": "fk",
                "train_key": f"t-{method}-{src}-{k}-{s}",
                "eval_key": f"e-{method}-{protocol}-{src}-{k}-{s}-{dataset}-{dsubset}",
                "train_seconds": 0.0,
                "eval_seconds": 0.0,
                "diagnostics": "{}",
            }
        )

    for m in methods:
        for d in datasets:
            for k in shots:
                for s in seeds:
                    add(m, "few_shot", d, "all", k, s, d, "all", "acc")
            for s in seeds:
                add(m, "base2new", d, "base", b2n_shots, s, d, "base", "base")
                add(m, "base2new", d, "base", b2n_shots, s, d, "new", "new", "n/a" if m in na_new else "ok")
        for protocol, tgts in (
            ("cross_dataset", [d for d in datasets if d != source]),
            ("domain_generalization", list(targets)),
        ):
            for s in seeds:
                for t in [source, *tgts]:
                    add(m, protocol, source, "all", 16, s, t, "all", "acc")
    return pd.DataFrame(rows, columns=COLUMNS)


def _read(path):
    return pd.read_csv(path, float_precision="round_trip", keep_default_na=False, na_values=[""])


def _write(results, out, expected=None, template_set="custom"):
    return aggregate.write_tables(results, expected, out, suite="test", template_set=template_set)


def _recompute_cell(parquet, protocol, method, backbone, source, shots, dataset, metric):
    g = parquet[
        (parquet.protocol == protocol)
        & (parquet.method == method)
        & (parquet.backbone == backbone)
        & (parquet.source == source)
        & (parquet.shots == shots)
        & (parquet.dataset == dataset)
        & (parquet.metric == metric)
        & (parquet.status == "ok")
    ].sort_values("seed")
    v = g.value.to_numpy(dtype=float)
    return (float(np.mean(v)), float(np.std(v)), len(v)) if len(v) else (math.nan, math.nan, 0)


def _expected_value(e, parquet, table):
    """Recompute one table entry from the Parquet rows alone."""
    if e["kind"] == "cell":
        source = e["column"] if e["protocol"] in ("few_shot", "base2new") else e["source"]
        return _recompute_cell(
            parquet, e["protocol"], e["method"], e["backbone"], source, e["shots"], e["column"], e["metric"]
        )[0]
    same = table[(table.method == e["method"]) & (table.backbone == e["backbone"]) & (table.shots == e["shots"])]
    if e["protocol"] in ("cross_dataset", "domain_generalization"):
        same = same[same.source == e["source"]]
    if e["kind"] == "H":
        b = _expected_value(same[(same.column == e["column"]) & (same.metric == "base")].iloc[0], parquet, table)
        n = _expected_value(same[(same.column == e["column"]) & (same.metric == "new")].iloc[0], parquet, table)
        return 2 * b * n / (b + n)
    parts = same[(same.kind == "cell") & same.column.isin(e["datasets"].split(";")) & (same.metric == e["metric"])]
    return float(np.mean([_expected_value(p, parquet, table) for p in parts.sort_values("column").to_dict("records")]))


def test_every_table_number_recomputes_from_the_parquet(tmp_path):
    results = make_results(methods=("zeroshot", "clip_adapter", "linear_probe"), na_new=("linear_probe",))
    tree = _write(results, tmp_path)
    parquet = pd.read_parquet(tmp_path / "results.parquet")
    checked = 0
    for protocol in ("few_shot", "base2new", "cross_dataset", "domain_generalization"):
        table = _read(tmp_path / "tables" / f"{protocol}.csv")
        markdown = (tmp_path / "tables" / f"{protocol}.md").read_text()
        for e in table.to_dict("records"):
            if e["status"] != "ok":
                assert math.isnan(e["mean"]) or e["kind"] == "cell"
                continue
            want = _expected_value(e, parquet, table)
            assert e["mean"] == pytest.approx(want, rel=0, abs=1e-12), e
            if e["kind"] == "cell":
                _, std, n = _recompute_cell(
                    parquet,
                    protocol,
                    e["method"],
                    e["backbone"],
                    e["column"] if protocol in ("few_shot", "base2new") else e["source"],
                    e["shots"],
                    e["column"],
                    e["metric"],
                )
                assert e["std"] == pytest.approx(std, abs=1e-12) and e["n"] == n
                assert e["ci95_high"] - e["mean"] == pytest.approx(1.96 * std / math.sqrt(n), abs=1e-9)
                assert f"{want:.2f} ± {std:.2f}" in markdown
            else:
                assert f"| {want:.2f} |" in markdown or f"| {want:.2f}\n" in markdown
            checked += 1
    assert checked == 36 + 28 + 12 + 12  # few-shot, base-to-new (linear probe: bases only), XD, DG
    flat = _flatten(tree)
    assert flat["few_shot/toy_vit/zeroshot/toy_objects/16shot_acc"] == round(
        _recompute_cell(parquet, "few_shot", "zeroshot", "toy_vit", "toy_objects", 16, "toy_objects", "acc")[0], 4
    )
    assert "few_shot/toy_vit/zeroshot/average/16shot_acc" in flat and "base2new/toy_vit/zeroshot/average/H" in flat
    assert not any(k.startswith("base2new/toy_vit/linear_probe/") and k.endswith("/new") for k in flat)


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_base2new_average_h_is_h_of_mean_base_and_mean_new(tmp_path):
    _write(make_results(methods=("zeroshot",)), tmp_path)
    e = _read(tmp_path / "tables" / "base2new.csv")
    avg = e[e.column == "average"].set_index("metric")["mean"]
    per_h = e[(e.column != "average") & (e.metric == "H")]["mean"]
    assert avg["H"] == pytest.approx(harmonic(avg["base"], avg["new"]), abs=1e-12)
    assert avg["H"] != pytest.approx(per_h.mean(), abs=1e-6)


def test_deleted_result_is_missing_and_its_averages_are_marked(tmp_path):
    results = make_results()
    plan = results.copy()
    victim = results[
        (results.protocol == "few_shot")
        & (results.method == "clip_adapter")
        & (results.shots == 4)
        & (results.dataset == "toy_scenes")
        & (results.seed == 2)
    ].index
    tree = _write(results.drop(index=victim), tmp_path, expected=plan)
    matrix = _read(tmp_path / "completeness.csv")
    cell = matrix[(matrix.protocol == "few_shot") & (matrix.shots == 4) & (matrix.dataset == "toy_scenes")]
    assert cell["clip_adapter/toy_vit"].iloc[0] == "MISSING 2/3 (missing seed 2)"
    assert cell["zeroshot/toy_vit"].iloc[0] == "ok"
    few = (tmp_path / "tables" / "few_shot.md").read_text()
    row = next(line for line in few.splitlines() if line.startswith("| clip_adapter | toy_vit | 4 |"))
    assert "(n=2/3, missing)" in row and row.rstrip(" |").endswith("incomplete (2/3)")
    flat = _flatten(tree)
    assert "few_shot/toy_vit/clip_adapter/toy_scenes/4shot_acc" not in flat
    assert "few_shot/toy_vit/clip_adapter/average/4shot_acc" not in flat
    assert "few_shot/toy_vit/clip_adapter/average/16shot_acc" in flat
    assert "1 missing" in (tmp_path / "completeness.md").read_text()


def test_a_whole_dataset_absent_for_one_method_is_missing_without_a_plan(tmp_path):
    results = make_results()
    drop = (results.method == "zeroshot") & (results.protocol == "few_shot") & (results.dataset == "toy_objects")
    _write(results[~drop], tmp_path)
    e = _read(tmp_path / "tables" / "few_shot.csv")
    zs = e[(e.method == "zeroshot") & (e.column == "average")]
    assert (zs.status == "incomplete").all() and zs["mean"].isna().all()
    assert "MISSING 0/3" in (tmp_path / "completeness.md").read_text()


def test_failed_and_na_stay_distinct_from_missing(tmp_path):
    results = make_results(na_new=("clip_adapter",))
    i = results[
        (results.protocol == "cross_dataset")
        & (results.method == "zeroshot")
        & (results.dataset == "toy_scenes")
        & (results.seed == 1)
    ].index
    results.loc[i, ["status", "value"]] = ["failed", math.nan]
    _write(results, tmp_path)
    xd = (tmp_path / "tables" / "cross_dataset.md").read_text()
    zs = next(line for line in xd.splitlines() if line.startswith("| zeroshot |"))
    assert "(n=2/3, failed)" in zs and "incomplete (1/2)" in zs
    b2n = (tmp_path / "tables" / "base2new.md").read_text()
    ca = next(line for line in b2n.splitlines() if line.startswith("| clip_adapter |"))
    assert ca.count("n/a") == 8 and "incomplete" not in ca  # 3 new + 3 H + average new + average H
    matrix = (tmp_path / "completeness.md").read_text()
    assert "FAILED 2/3 (failed seed 1)" in matrix and "| n/a |" in matrix and "MISSING" not in matrix


def test_plots_are_written_deterministically_and_skip_incomplete_points(tmp_path):
    results = make_results()
    drop = results[
        (results.protocol == "few_shot")
        & (results.method == "zeroshot")
        & (results.shots == 4)
        & (results.dataset == "toy_objects")
        & (results.seed == 1)
    ].index
    _write(results.drop(index=drop), tmp_path / "a", expected=results)
    _write(results.drop(index=drop), tmp_path / "b", expected=results)
    pngs = sorted(p.name for p in (tmp_path / "a" / "plots").glob("*.png"))
    assert pngs == [
        "base_new_toy_vit.png",
        "few_shot_toy_vit_average.png",
        "few_shot_toy_vit_toy_objects.png",
        "few_shot_toy_vit_toy_scenes.png",
        "few_shot_toy_vit_toy_textures.png",
    ]
    for name in pngs:
        a, b = (tmp_path / d / "plots" / name for d in "ab")
        assert a.read_bytes() == b.read_bytes() and a.read_bytes()[:4] == b"\x89PNG"
    curves = _read(tmp_path / "a" / "few_shot_curves.csv")
    zs = curves[(curves.method == "zeroshot") & (curves.dataset == "average")]
    assert sorted(zs.shots) == [1, 16]


def _vit_b16() -> str:
    return next(
        k for k in BACKBONES.names() if BACKBONES.get(k).model == "ViT-B-16" and BACKBONES.get(k).pretrained == "openai"
    )


def _rn50() -> str:
    return next(
        k for k in BACKBONES.names() if BACKBONES.get(k).model == "RN50" and BACKBONES.get(k).pretrained == "openai"
    )


def _entry(**kw):
    base = {
        "protocol": "base2new",
        "method": "zeroshot",
        "backbone": _vit_b16(),
        "source": "imagenet",
        "shots": 16,
        "column": "imagenet",
        "metric": "base",
        "mean": 70.0,
        "status": "ok",
        "datasets": "",
    }
    return {**base, **kw}


def _published(template_set="custom", **kw):
    return reference.match(pd.DataFrame([_entry(**kw)]), template_set).iloc[0]


def test_published_join_respects_backbone_shots_templates_and_traps():
    assert _published().published == 72.43 and _published().delta == pytest.approx(70.0 - 72.43)
    assert math.isnan(_published(backbone="toy_vit").published)
    assert math.isnan(_published(template_set="photo").published)
    assert _published(metric="H").published == 70.22  # hm
    assert _published(method="coop").published == 76.47 and math.isnan(_published(method="coop", shots=4).published)
    assert _published(shots=4).published == 72.43  # zero-shot numbers do not depend on shots
    rn50 = {"protocol": "few_shot", "backbone": _rn50(), "metric": "acc"}
    assert _published(**rn50, shots=4).published == 58.18  # CoOp single-template baseline (trap 1)
    assert _published(template_set="custom+imagenet7", **rn50, shots=4).published == 60.32  # Tip baseline
    assert _published(**rn50, shots=4, column="caltech101").published == 86.29
    assert math.isnan(_published(**{**rn50, "method": "tip_adapter"}, shots=16).published)  # ImageNet: ensemble
    tip = _published(template_set="custom+imagenet7", **{**rn50, "method": "tip_adapter"}, shots=16)
    assert tip.published == 62.01 and "Tip-Adapter (Zhang" in tip.published_paper  # primary over reprint
    assert _published(**{**rn50, "method": "tip_adapter"}, shots=16, column="dtd").published == 60.93
    dg = {"protocol": "domain_generalization", "method": "coop", "metric": "acc", "column": "imagenet_sketch"}
    assert _published(**dg).published_printed == "47.99"  # two-decimal original, not the 48.0 reprint
    assert math.isnan(_published(**{**dg, "source": "caltech101"}).published)
    assert math.isnan(_published(**{**dg, "method": "prolip", "backbone": _rn50()}).published)  # trap 5: unused
    assert math.isnan(_published(status="missing").delta)


def test_published_average_needs_exactly_the_published_datasets():
    eleven = ";".join(sorted(reference.CLASSIFICATION))
    assert _published(column="average", datasets=eleven).published == 69.34
    assert math.isnan(_published(column="average", datasets="dtd;eurosat").published)
    xd = {"protocol": "cross_dataset", "method": "cocoop", "metric": "acc", "column": "average"}
    ten = ";".join(sorted(get_protocol("cross_dataset").published_average()))
    assert not math.isnan(_published(**xd, datasets=ten).published)


def test_published_column_appears_in_reports_for_vitb16_rows(tmp_path):
    bb = _vit_b16()
    results = make_results(
        methods=("zeroshot",),
        backbone=bb,
        datasets=list(reference.CLASSIFICATION),
        shots=(16,),
        source="imagenet",
        targets=["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"],
    )
    _write(results, tmp_path)
    pub = _read(tmp_path / "published.csv")
    b2n = pub[pub.protocol == "base2new"]
    assert len(b2n) == 36  # 11 datasets + average, each base/new/H
    avg_h = b2n[(b2n.column == "average") & (b2n.metric == "H")].iloc[0]
    assert avg_h.published == 71.70 and avg_h.delta == pytest.approx(avg_h["mean"] - 71.70, abs=1e-9)
    md = (tmp_path / "tables" / "base2new.md").read_text()
    assert "Published vs reproduced" in md and "| 71.70 |" in md
    assert set(pub.protocol) == {"base2new", "domain_generalization"}  # CoCoOp's XD table has no zero-shot row
    assert "Published vs reproduced" not in (tmp_path / "tables" / "few_shot.md").read_text()  # RN50 only


def test_every_published_row_is_annotated_and_shipped():
    ref = reference.published()
    assert len(ref) == 580 and ref.clipbench_method.notna().all()
    assert set(ref.templates) <= {"custom", "custom+imagenet7", "clipfit", "photo", "ensemble", "any"}
    assert reference.PUBLISHED_FILE.read_bytes().count(b"\r\n") == 581
    assert re.search(r'"reference/\*\.csv"', (reference.PUBLISHED_FILE.parents[2] / "pyproject.toml").read_text())


def test_aggregate_stage_marks_deleted_rows_and_absent_tables_as_missing(tmp_path):
    from clipbench.config import SuiteConfig
    from clipbench.layout import Layout
    from clipbench.results import RESULT_FILE, write_results
    from clipbench.typed import parse

    from conftest import tiny_params

    cfg, layout = parse(SuiteConfig, tiny_params(), "test params"), Layout(tmp_path)
    plan = aggregate.expected_rows(cfg)
    rng = np.random.default_rng(0)
    for method in ("zeroshot", "clip_adapter"):  # linear_probe's table is absent
        rows = plan[plan.method == method].assign(
            value=rng.uniform(20, 90, (plan.method == method).sum()),
            status="ok",
            n=10,
            note="",
            config_hash="c",
            split_hash="s",
            feature_key="f",
            train_key="t",
            train_seconds=0.0,
            eval_seconds=0.0,
            diagnostics="{}",
        )
        rows = rows.assign(eval_key=[f"{method}-{i}" for i in range(len(rows))])
        if method == "clip_adapter":
            rows = rows[~((rows.protocol == "few_shot") & (rows.shots == 4) & (rows.seed == 2))]
        write_results(rows, layout.results("toy_vit", method) / RESULT_FILE)
    aggregate.run(cfg=cfg, layout=layout)
    matrix = _read(tmp_path / "reports" / "completeness.csv")
    few = matrix[(matrix.protocol == "few_shot") & (matrix.shots == 4)]
    assert few["clip_adapter/toy_vit"].tolist() == ["MISSING 1/2 (missing seed 2)"]
    assert few["zeroshot/toy_vit"].tolist() == ["ok"]
    assert (matrix["linear_probe/toy_vit"].str.startswith("MISSING 0/")).all()
    table = (tmp_path / "reports" / "tables" / "few_shot.md").read_text()
    assert "| clip_adapter | toy_vit | 4 | 1 |" in table and "incomplete (0/1)" in table
    written = pd.read_parquet(tmp_path / "reports" / "results.parquet")
    assert len(written) == len(plan[plan.method != "linear_probe"]) - 1
