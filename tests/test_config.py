"""Configs: TOML into frozen dataclasses, --set overrides, errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from worldplay.config import Config, config_from_dict, load_config
from worldplay.errors import ConfigError

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, Config) and cfg.name == name.removesuffix(".toml")


def test_overrides_and_frozen():
    cfg = load_config(CONFIGS / "toy.toml", ["train_dynamics.batch_size=8", "data.holdout=0.25", "name=other"])
    assert cfg.train_dynamics.batch_size == 8 and cfg.data.holdout == 0.25 and cfg.name == "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data.holdout = 0.3  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, message",
    [
        ("dynamics.windw=8", r"dynamics\.windw: unknown key; did you mean 'window'\?"),
        ("nope.x=1", r"nope: unknown key"),
        ("dynamics.window=1", r"dynamics\.window: must be >= 2"),
        ("dynamics.window=abc", r"dynamics\.window: expected an integer, got 'abc'"),
        ("dynamics.window=1.5", r"dynamics\.window: expected an integer"),
        ("train_dynamics.steps=0", r"train_dynamics\.steps: must be >= 1, got 0"),
        ("train_autoencoder.warmup=-1", r"train_autoencoder\.warmup: must be in \[0, steps\)"),
        ("dynamics.width=30", r"dynamics\.width: 30 must split into 2 heads"),
        ("data.holdout=1", r"data\.holdout: must be in \[0, 1\)"),
        ("data.dataset=3", r"data\.dataset: expected a string"),
        ("data=3", r"data: expected a table"),
        ("data.holdout", r"expected key=value"),
        (
            "train_dynamics.early_window=8",
            r"train_dynamics\.early_window: must be 0 \(off\) or from 2 to .*\(7\), got 8",
        ),
        (
            "train_dynamics.early_window_steps=4000",
            r"train_dynamics\.early_window_steps: must be at most steps \(3000\)",
        ),
        ("train_autoencoder.early_window=4", r"train_autoencoder\.early_window: only the dynamics stage"),
        ("reward.lag=3", r"reward\.lag: must be in \[0, reward\.frames - 2\] = \[0, 2\].*got 3"),
        ("rate.guidance=-1", r"rate\.guidance: must be >= 0 \(0: the world's own\), got -1"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(CONFIGS / "toy.toml", [override])
    assert "toy.toml" in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[data\nholdout = 3")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "typo.toml").write_text("[train_dynamics]\nbatchsize = 3\n")
    with pytest.raises(
        ConfigError, match=r"typo\.toml: train_dynamics\.batchsize: unknown key; did you mean 'batch_size'"
    ):
        load_config(tmp_path / "typo.toml")


def test_a_section_given_in_part_keeps_the_rest_of_its_default_in_the_config():
    # Config's train_reward differs from TrainConfig's defaults (batch 128, not 32): one key set by --set (or in a
    # partial [train_reward] table) must not reset the others to the class's defaults
    cfg = config_from_dict({}, ["train_reward.steps=200"])
    assert cfg.train_reward.steps == 200
    assert cfg.train_reward.batch_size == Config().train_reward.batch_size == 128
    assert cfg.train_reward.lr == Config().train_reward.lr
    assert (
        config_from_dict({"train_decoder": {"lr": 5e-4}}).train_decoder.batch_size == Config().train_decoder.batch_size
    )
