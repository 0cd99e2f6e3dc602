"""The click CLI: listing, validation with clear errors and exit codes."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from clipbench.cli import main
from clipbench.methods import METHODS

from conftest import tiny_params


def test_list_methods_shows_every_registered_method():
    out = CliRunner().invoke(main, ["list", "methods"])
    assert out.exit_code == 0
    for name in METHODS.names():
        assert name in out.output


def test_validate_reports_bad_key_and_exits_2(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(methods=["zeroshot", "coopp"])))
    out = CliRunner().invoke(main, ["validate", "--params", str(params)])
    assert out.exit_code == 2
    assert "unknown method 'coopp'" in out.output and "Valid method names" in out.output


def test_validate_accepts_good_params(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params()))
    out = CliRunner().invoke(main, ["validate", "--params", str(params)])
    assert out.exit_code == 0, out.output
    assert "clip_adapter" in out.output


def test_datasets_lists_found_missing_and_invalid_with_the_fix(tmp_path):
    import shutil

    from coop_fixtures import write_coop_root

    root = write_coop_root(tmp_path / "coop")
    shutil.rmtree(root / "dtd")
    (root / "eurosat" / "split_zhou_EuroSAT.json").write_text("{")
    out = CliRunner().invoke(
        main, ["datasets", "--data-root", str(root), "--counts", "classes", "--params", str(tmp_path / "none.yaml")]
    )
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line.split() for line in out.output.splitlines()[2:] if not line.startswith(" ")}
    assert rows["oxford_pets"][1:6] == ["found", "37", "110", "37", "37"]
    assert rows["imagenet_a"][1:3] == ["found", "200"]
    assert rows["dtd"][1] == "missing" and "split_zhou_DescribableTextures.json in dtd/" in out.output
    assert rows["eurosat"][1] == "invalid" and "split_zhou_EuroSAT.json is not valid JSON" in out.output
    exact = CliRunner().invoke(main, ["datasets", "--data-root", str(root), "--dataset", "oxford_pets"])
    assert "invalid" in exact.output and "train: expected 2,944, found 110" in exact.output


def test_datasets_rejects_unknown_names(tmp_path):
    out = CliRunner().invoke(main, ["datasets", "--data-root", str(tmp_path), "--dataset", "oxfordpets"])
    assert out.exit_code == 2 and "oxford_pets" in out.output


def test_compare_offers_every_registered_protocol():
    from clipbench.protocols import REGISTRY

    out = CliRunner().invoke(main, ["compare", "--help"])
    assert out.exit_code == 0 and all(name in out.output for name in REGISTRY.in_order())
    bad = CliRunner().invoke(main, ["compare", "a", "b", "--protocol", "few_shots"])
    assert bad.exit_code == 2 and "few_shots" in bad.output
