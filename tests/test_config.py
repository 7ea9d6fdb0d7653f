"""Configs: TOML into frozen dataclasses, --set overrides, errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from worldplay.config import Config, load_config
from worldplay.errors import ConfigError

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, Config) and cfg.name == name.removesuffix(".toml")


def test_overrides_and_frozen():
    cfg = load_config(CONFIGS / "toy.toml", ["data.batch_size=8", "data.holdout=0.25", "name=other"])
    assert cfg.data.batch_size == 8 and cfg.data.holdout == 0.25 and cfg.name == "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data.batch_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.windw=8", r"data\.windw: unknown key; did you mean 'window'\?"),
        ("nope.x=1", r"nope: unknown key"),
        ("data.window=0", r"data\.window: must be >= 1, got 0"),
        ("data.window=abc", r"data\.window: expected an integer, got 'abc'"),
        ("data.window=1.5", r"data\.window: expected an integer"),
        ("data.holdout=1", r"data\.holdout: must be in \[0, 1\)"),
        ("data.dataset=3", r"data\.dataset: expected a string"),
        ("data=3", r"data: expected a table"),
        ("data.window", r"expected key=value"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(CONFIGS / "toy.toml", [override])
    assert "toy.toml" in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[data\nwindow = 3")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "typo.toml").write_text("[data]\nbatchsize = 3\n")
    with pytest.raises(ConfigError, match=r"typo\.toml: data\.batchsize: unknown key; did you mean 'batch_size'"):
        load_config(tmp_path / "typo.toml")
