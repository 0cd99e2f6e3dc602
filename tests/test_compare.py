"""Paired comparison: differences on shared cells only, tests that detect a real shift, CLI and report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from click.testing import CliRunner

from clipbench import compare
from clipbench.cli import main
from clipbench.pipeline import aggregate

from test_report import make_results


def _shifted(shift=2.0, noise=0.5):
    """clip_adapter = zeroshot + shift (+ noise) on every cell; linear_probe n/a on new classes."""
    r = make_results(methods=("zeroshot", "clip_adapter", "linear_probe"), na_new=("linear_probe",))
    zs = r[r.method == "zeroshot"].set_index(compare.PAIR_KEYS).value
    rng = np.random.default_rng(1)
    ca = r.method == "clip_adapter"
    keyed = r[ca].set_index(compare.PAIR_KEYS).index
    r.loc[ca, "value"] = zs.reindex(keyed).to_numpy() + shift + rng.normal(0, noise, ca.sum())
    return r


def test_pairs_are_per_seed_differences_on_shared_ok_cells():
    r = _shifted()
    p = compare.pairs(r, "clip_adapter", "zeroshot", "base2new")
    assert len(p) == 3 * 3 * 2  # datasets x seeds x {base, new}
    row = p.iloc[0]
    a = r[
        (r.method == "clip_adapter")
        & (r.protocol == "base2new")
        & (r.dataset == row.dataset)
        & (r.seed == row.seed)
        & (r.metric == row.metric)
    ].value.iloc[0]
    assert row["diff"] == a - row.b
    lp = compare.pairs(r, "linear_probe", "zeroshot", "base2new")
    assert set(lp.metric) == {"base"} and compare.unpaired(r, "linear_probe", "zeroshot", "base2new") == 9


def test_summary_detects_a_shift_and_not_its_absence():
    r = _shifted(shift=2.0)
    table = compare.summary_table(compare.pairs(r, "clip_adapter", "zeroshot", "few_shot"))
    per_shot = table[table.shots != "all"]
    assert (per_shot.mean_diff.between(1.0, 3.0)).all() and (per_shot.t_p < 0.01).all()
    assert (per_shot.ci95_low > 0).all() and (per_shot.wilcoxon_p < 0.05).all()
    null = compare.summarize(np.random.default_rng(0).normal(0, 1, 27))
    assert null["ci95_low"] < 0 < null["ci95_high"] and null["t_p"] > 0.05
    assert math.isnan(compare.summarize(np.array([1.0]))["t_p"])


def test_cli_compare_prints_summary_and_per_seed_table(tmp_path):
    r = _shifted()
    path = tmp_path / "results.parquet"
    r.to_parquet(path, index=False)
    out = CliRunner().invoke(
        main, ["compare", "clip_adapter", "zeroshot", "--results", str(path), "--protocol", "cross_dataset"]
    )
    assert out.exit_code == 0, out.output
    assert "clip_adapter − zeroshot" in out.output and "Per-seed differences" in out.output
    assert out.output.count("| cross_dataset | toy_vit | 16 | toy_") == 9  # 3 datasets x 3 seeds
    bad = CliRunner().invoke(main, ["compare", "coop", "zeroshot", "--results", str(path)])
    assert bad.exit_code == 2 and "'coop' has no rows" in bad.output


def test_report_section_compares_every_method_with_zero_shot(tmp_path):
    aggregate.write_tables(_shifted(), None, tmp_path, suite="t", template_set="custom")
    text = (tmp_path / "compare.md").read_text()
    assert "### clip_adapter vs zeroshot" in text and "### linear_probe vs zeroshot" in text
    assert pd.read_parquet(tmp_path / "results.parquet").method.nunique() == 3
