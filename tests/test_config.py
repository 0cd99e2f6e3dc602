"""params.yaml is validated before any work: names, types, keys and protocol consistency."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clipbench.config import SuiteConfig, load_suite
from clipbench.errors import ConfigError
from clipbench.protocols import REGISTRY as PROTOCOL_REGISTRY
from clipbench.protocols import eval_cells
from clipbench.typed import parse

from conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]


def check(**overrides):
    return parse(SuiteConfig, tiny_params(**overrides), "params.yaml")


def test_project_params_are_valid():
    cfg = load_suite(ROOT / "params.yaml")
    assert cfg.suite == "toy" and cfg.methods


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"methods": ["zeroshot", "clipfitt"]}, "unknown method 'clipfitt'"),
        ({"datasets": ["toy_objects", "imagenett"]}, "unknown dataset 'imagenett'"),
        ({"backbones": ["vit-b-16"]}, "Valid backbone names"),
        ({"bogus": 1}, "unknown key(s) 'bogus'"),
        ({"features": {"max_views": "ten"}}, "features.max_views: expected"),
        ({"features": {"views": 10}}, "unknown key(s) 'views'"),
        ({"features": {"max_views": 0}}, "features.max_views: must be positive or null"),
        (
            {"method_params": {"clip_adapter": {"crop_scale": [0.5, 0.2]}}},
            "method_params.clip_adapter.crop_scale: need 0",
        ),
        ({"method_params": {"clip_adapter": {"lr": "fast"}}}, "method_params.clip_adapter.lr"),
        ({"method_params": {"clip_adapter": {"alpah": 0.3}}}, "method_params.clip_adapter.alpah: unknown key"),
        ({"method_params": {"no_such_method": {}}}, "unknown method 'no_such_method'"),
        ({"targets": ["toy_objects"]}, "both datasets and targets"),
        ({"datasets": ["toy_objects", "toy_objects_noisy"]}, "no training split"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as err:
        check(**overrides)
    assert needle in str(err.value)


def _protocols(**change):
    p = tiny_params()["protocols"]
    for key, value in change.items():
        p[key] = {**p[key], **value}
    return p


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"few_shot": {"shots": [0, 4]}}, "positive"),
        ({"few_shot": {"seeds": []}}, "at least one"),
        ({"few_shot": {"shots": [4, 4]}}, "duplicate"),
        ({"base2new": {"shots": -1}}, "positive"),
        ({"cross_dataset": {"source": "toy_scenes"}}, "not listed under datasets"),
        ({"domain_generalization": {"targets": ["toy_objects_noisy"]}}, "not listed under datasets or targets"),
    ],
)
def test_protocol_errors(change, needle):
    with pytest.raises(ConfigError) as err:
        check(protocols=_protocols(**change))
    assert needle in str(err.value)


def test_unknown_protocol_is_an_error_listing_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        check(protocols={**tiny_params()["protocols"], "few_shots": {"datasets": ["toy_objects"]}})
    message = str(err.value)
    assert "protocols: unknown protocol 'few_shots'" in message and "Did you mean few_shot" in message
    assert all(name in message for name in PROTOCOL_REGISTRY.in_order()) and "\n" not in message


def test_an_absent_or_null_protocol_is_disabled():
    cfg = check(protocols={"few_shot": tiny_params()["protocols"]["few_shot"], "base2new": None})
    assert list(cfg.protocols) == ["few_shot"]
    assert {c.protocol for c in eval_cells(cfg)} == {"few_shot"}


def test_no_protocol_is_an_error():
    with pytest.raises(ConfigError, match="at least one"):
        check(protocols={})


def test_missing_params_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_suite(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("suite: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(bad)


def test_configs_are_frozen_and_overrides_apply(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(method_params={"clip_adapter": {"alpha": 0.5}})))
    cfg = load_suite(path)
    adapter = cfg.method_config("clip_adapter")
    assert adapter.alpha == 0.5 and adapter.epochs == 200
    with pytest.raises(AttributeError):
        adapter.alpha = 0.1  # type: ignore[misc]
    assert cfg.method_config_hash("clip_adapter") != check().method_config_hash("clip_adapter")


def test_data_counts_must_be_a_known_mode(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(data_counts="loose")))
    with pytest.raises(ConfigError, match="data_counts: 'loose' is not one of exact, classes"):
        load_suite(path)


def test_methods_all_means_every_registered_method_and_method_params_may_omit_any(tmp_path):
    from clipbench.methods import METHODS

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(methods="all", method_params={})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_suite(tmp_path / "params.yaml")
    assert list(cfg.methods) == METHODS.names()
    assert all(cfg.method_config(m) == METHODS.get(m).Config() for m in cfg.methods)  # defaults apply
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "methods": "every"}))
    with pytest.raises(ConfigError, match="methods: 'every'"):
        load_suite(tmp_path / "params.yaml")
