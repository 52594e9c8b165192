"""Configuration: defaults, environment overrides, in-code overrides, and clear errors."""

from __future__ import annotations

import pytest

from mpicoll.config import SETTINGS, Config
from mpicoll.errors import ConfigError


@pytest.fixture
def cfg(monkeypatch):
    for setting in SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)
    return Config()


def test_defaults(cfg):
    assert cfg.get("validate") is True
    assert cfg["segment_bytes"] == 1 << 20
    assert cfg.get("cuda_aware") == "unset"
    assert set(cfg.as_dict()) == set(SETTINGS)


def test_environment_overrides(cfg, monkeypatch):
    monkeypatch.setenv("MPICOLL_SEGMENT_BYTES", "256K")
    monkeypatch.setenv("MPICOLL_VALIDATE", "off")
    monkeypatch.setenv("MPICOLL_CUDA_AWARE", "1")
    assert cfg.get("segment_bytes") == 256 << 10
    assert cfg.get("validate") is False
    assert cfg.get("cuda_aware") == "1"


@pytest.mark.parametrize(("var", "value", "accepted"), [
    ("MPICOLL_VALIDATE", "maybe", "true/false"),
    ("MPICOLL_SEGMENT_BYTES", "1", "from 1024"),
    ("MPICOLL_CUDA_AWARE", "yes", "'unset', '0' or '1'"),
    ("MPICOLL_PIPELINE_DEPTH", "zero", "invalid"),
])
def test_bad_environment_value_names_variable_and_accepted(cfg, monkeypatch, var, value, accepted):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        cfg.get("validate")
    assert var in str(info.value) and repr(value) in str(info.value) and accepted in str(info.value)


def test_unknown_key_and_bad_value_in_code(cfg):
    with pytest.raises(ConfigError, match=r"unknown mpicoll setting 'segment_size'.*segment_bytes"):
        cfg.get("segment_size")
    with pytest.raises(ConfigError, match=r"pipeline_depth=0.*from 1 to 64"):
        cfg.set(pipeline_depth=0)
    with pytest.raises(ValueError):  # ConfigError is also a ValueError
        cfg.set(validate="yes")


def test_override_restores(cfg):
    with cfg.override(segment_bytes=4096, validate=False):
        assert cfg.get("segment_bytes") == 4096 and cfg.get("validate") is False
    assert cfg.get("segment_bytes") == 1 << 20 and cfg.get("validate") is True


def test_unknown_environment_variable_warns(cfg, monkeypatch):
    monkeypatch.setenv("MPICOLL_SEGMENT_SIZE", "1M")
    with pytest.warns(UserWarning, match="MPICOLL_SEGMENT_SIZE is not an mpicoll setting"):
        cfg.get("validate")
