"""Shipped worlds open by name from any folder; a folder of the same name wins; a wrong name says what exists."""

from __future__ import annotations

import json
import shutil

import pytest

from worldplay.checkpoint import CheckpointError, default_world, resolve_world, shipped_worlds
from worldplay.cli import main


def test_a_shipped_world_opens_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"boxing", "boxing-cpu", "privateeye", "toy-push"} <= set(shipped_worlds())
    assert resolve_world("boxing") == default_world("boxing")
    from worldplay.world import load_world

    cpu = load_world(resolve_world("boxing-cpu"))  # the world trained on the 2-core CPU, with reward and rate models
    assert cpu.meta["name"] == "boxing-cpu" and cpu.has_reward and cpu.has_rate and cpu.config.width == 128
    eye = load_world(resolve_world("privateeye"))  # the second game, trained by configs/atari-cpu.toml on the CPU
    assert eye.meta["name"] == "privateeye" and {"LEFT", "RIGHT", "UP"} <= set(eye.action_names)
    toy = load_world(resolve_world("toy-push"))  # the pushed-ball toy game's world, which eval-agents is tested on
    assert toy.meta["name"] == "toy-push" and toy.has_reward and toy.config.guidance == 1.0
    assert resolve_world(None) == default_world()
    box = json.loads((default_world("boxing") / "world.json").read_text())  # its rate model, for --score rate
    assert box["rate"]["config"]["keys"] == 24 and (default_world("boxing") / "rate").is_dir()
    from worldplay.agents import reading

    # eval-agents reads both Boxing worlds by their rate models on 8-step rollouts, the CPU world's at guidance 0.75,
    # as they were chosen and measured
    assert reading(default_world("boxing")) == ("rate", 8, None)
    assert reading(default_world("boxing-cpu")) == ("rate", 8, 0.75)
    assert reading(default_world("toy-push")) == ("events", None, None)
    (tmp_path / "boxing").mkdir()
    assert resolve_world("boxing").resolve() == (tmp_path / "boxing").resolve()  # a folder of that name wins


def test_python_opens_a_shipped_world_by_name_as_the_command_line_does(tmp_path, monkeypatch):
    """load_world and the environments take a shipped world's name from any folder (README "From Python"), a folder of
    that name still wins, and an unknown name lists the shipped ones."""
    from worldplay.env import WorldModelEnv
    from worldplay.world import load_world

    monkeypatch.chdir(tmp_path)
    toy = load_world("toy-push")
    assert toy.meta["name"] == "toy-push"
    env = WorldModelEnv("toy-push", max_episode_steps=2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == toy.frame_shape
    shutil.copytree(default_world("toy-push"), tmp_path / "boxing")  # a folder named like a shipped world
    assert load_world("boxing").meta["name"] == "toy-push"
    with pytest.raises(CheckpointError, match=r"no-such-world: neither a world folder nor a shipped world"):
        load_world("no-such-world")


def test_an_unknown_name_lists_the_shipped_worlds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"shipped: .*boxing"):
        resolve_world("no-such-world")
    assert main(["play", "no-such-world", "--headless", "--keys", "NOOP"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-world: neither a world folder nor a shipped world" in err


def _damaged_copy(tmp_path, *, manifest: bool = True):
    world = tmp_path / "world"
    shutil.copytree(default_world("boxing"), world)
    biggest = max((p for p in world.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as f:
        f.truncate(1000)
    if not manifest:  # a world written before worlds listed their files
        meta = json.loads((world / "world.json").read_text())
        del meta["files"]
        (world / "world.json").write_text(json.dumps(meta))
    return world, biggest.relative_to(world).as_posix()


def test_a_truncated_weight_file_is_named_in_one_line(tmp_path, capsys):
    world, damaged = _damaged_copy(tmp_path)
    assert main(["play", str(world), "--headless", "--keys", "NOOP"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{world}: {damaged} is damaged (1,000 bytes" in err and "reinstall" in err


def test_a_damaged_world_without_a_file_list_still_fails_in_one_line(tmp_path, capsys):
    world, _ = _damaged_copy(tmp_path, manifest=False)
    assert main(["play", str(world), "--headless", "--keys", "NOOP"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 600, err
    assert "the weights do not load" in err and "reinstall" in err
