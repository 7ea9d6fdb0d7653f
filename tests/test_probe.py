"""worldplay probe: repeat-last and the keys' effect, measured on the game itself from saved states."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from worldplay.data.probe import probe_game
from worldplay.data.sources import AleGame, ToyGame
from worldplay.errors import WorldplayError
from worldplay.metrics import PSNR_CAP_DB
from worldplay.policies import StickyPolicy


class KeylessToy(ToyGame):
    """The toy game with keys that do nothing."""

    def step(self, action: int):
        return super().step(0)


def test_keys_that_move_the_player_have_an_effect_and_keys_that_do_nothing_have_none():
    toy, keyless = ToyGame(), KeylessToy()
    moved = probe_game(toy, StickyPolicy(5), episodes=2, steps=300, horizons=(1, 4), every=16, progress=False)
    still = probe_game(keyless, StickyPolicy(5), episodes=2, steps=300, horizons=(1, 4), every=16, progress=False)
    assert moved["starts"] >= 10 and still["starts"] >= 10
    h4 = moved["horizons"][1]
    assert h4["horizon"] == 4 and h4["key_effect_psnr"] < PSNR_CAP_DB and h4["key_share"] > 0.3
    assert h4["delta_at_repeat_last"] == pytest.approx(10 * np.log10(1 + h4["key_share"]))
    for row in still["horizons"]:  # the same futures with any keys: no effect, no delta-PSNR to win
        assert row["key_effect_psnr"] == PSNR_CAP_DB and row["key_share"] == 0 and row["delta_at_repeat_last"] == 0
        assert 10 < row["repeat_last_psnr"] < 40  # the world still moves on its own
    assert moved["horizons"][0]["repeat_last_psnr"] > h4["repeat_last_psnr"]  # the frames drift further with time


def test_an_atari_state_restored_replays_the_same_frames():
    game = AleGame("Boxing")
    try:
        game.reset(3)
        for a in [3, 3, 1]:
            game.step(a)
        saved = game.clone_state()
        first = [game.step(a)[0] for a in [4, 4, 2, 1, 0, 3]]  # sticky keys draw from the emulator's generator
        game.restore_state(saved)
        again = [game.step(a)[0] for a in [4, 4, 2, 1, 0, 3]]
        assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
        game.restore_state(saved)
        assert not all(np.array_equal(x, game.step(a)[0]) for x, a in zip(first, [3, 3, 3, 3, 3, 4], strict=True))
    finally:
        game.close()


def test_an_atari_state_without_its_generator_plays_on_with_the_restoring_games_sticky_keys():
    # the start's last key held on (sticky keys cannot change it), then keys that change: sticky keys draw
    keys = [1] * 4 + [4, 4, 2, 1, 0, 3, 5, 5, 2, 2, 3, 4] * 4
    games = [AleGame("Boxing") for _ in range(3)]
    try:
        games[0].reset(3)
        for a in [3, 3, 1]:
            games[0].step(a)
        bare, whole = games[0].clone_state(include_rng=False), games[0].clone_state()
        played = []
        for game, seed, state in [(games[1], 11, bare), (games[2], 12, bare), (games[0], 3, whole)]:
            game.reset(seed)
            game.restore_state(state)
            played.append([game.step(a)[0] for a in keys])
        original = played[2]
        for frames in played[:2]:  # every game continues from the copied state ...
            assert all(np.array_equal(x, y) for x, y in zip(frames[:4], original[:4], strict=True))
        # ... and without the generator, two games seeded apart draw their own sticky keys: the frames part
        assert not all(np.array_equal(x, y) for x, y in zip(played[0], played[1], strict=True))
        games[1].reset(99)
        games[1].restore_state(whole)  # with the generator: the original game's own draws, whatever the seed
        assert all(np.array_equal(x, games[1].step(a)[0]) for x, a in zip(original, keys, strict=True))
    finally:
        for game in games:
            game.close()


def test_bad_probes_are_refused():
    with pytest.raises(WorldplayError, match=r"--every 4: must be at least the longest horizon \(8\)"):
        probe_game(ToyGame(), StickyPolicy(5), horizons=(1, 8), every=4, progress=False)
    with pytest.raises(WorldplayError, match="no start with 16 steps of future"):
        probe_game(ToyGame(), StickyPolicy(5), episodes=1, steps=30, progress=False)


def test_probe_command_prints_json():
    out = subprocess.run(
        [sys.executable, "-m", "worldplay", "probe", "toy", "--episodes", "1", "--steps", "200", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert [r["horizon"] for r in result["horizons"]] == [1, 4, 8, 16] and result["policy"] == "sticky"
    bad = subprocess.run(
        [sys.executable, "-m", "worldplay", "probe", "toy", "--policy", "human"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "--policy human" in bad.stderr
