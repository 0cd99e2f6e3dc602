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
