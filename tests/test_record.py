"""Recording: the toy game, action alignment, policies, Atari, and atomicity under SIGKILL."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from worldplay import open_dataset
from worldplay.data.format import validate_dataset
from worldplay.data.record import play_episode, record
from worldplay.data.sources import ToyGame, make_source
from worldplay.errors import WorldplayError
from worldplay.policies import FunctionPolicy, RandomPolicy, StickyPolicy, make_policy


def test_toy_is_deterministic_and_action_dependent():
    g1, g2 = ToyGame(), ToyGame()
    f1, f2 = g1.reset(7), g2.reset(7)
    np.testing.assert_array_equal(f1, f2)
    for a in [4, 4, 1, 0, 2, 3]:
        np.testing.assert_array_equal(g1.step(a)[0], g2.step(a)[0])
    # From the same state, different actions give different next frames...
    g1.reset(3)
    g2.reset(3)
    assert not np.array_equal(g1.step(1)[0], g2.step(2)[0])
    # ...and the world moves on its own: NOOP still changes the frame (scrolling, ball).
    g1.reset(3)
    first = g1._render()
    assert not np.array_equal(first, g1.step(0)[0])
    assert ToyGame().reset(1).shape == (64, 64, 3)
    assert not np.array_equal(ToyGame().reset(1), ToyGame().reset(2))


def test_toy_push_variant_pushes_the_ball_and_nothing_random_follows():
    g = ToyGame(push=True)
    assert g.metadata()["game"] == "toy:push" and make_source("toy:push").metadata()["game"] == "toy:push"
    g.reset(0)
    g._wall[:] = False  # an open floor between the border walls
    g._wall[:4], g._wall[-4:], g._wall[:, :4], g._wall[:, -4:] = True, True, True, True
    g._player, g._ball, g._ball_v = np.array([20, 10]), np.array([20, 30]), np.array([0, 0])
    rewards = [g.step(4)[1] for _ in range(2)]  # RIGHT: 10 -> 18 (not touching at 18..29 vs 30), then 26: a push
    assert rewards == [0.0, 1.0] and g._touches == 1
    assert g._player[1] == 26 and g._ball[1] == 26 + ToyGame.PLAYER + 2  # beyond the far edge, flying on at 2 px
    assert not g._overlap(g._player, ToyGame.PLAYER, g._ball, g.ball_size)
    # into a wall: no room for the ball, so the player stops short of it and nothing scores
    g._player, g._ball, g._ball_v = np.array([20, 34]), np.array([20, 48]), np.array([0, 0])
    assert g.step(4)[1] == 0.0 and g._player[1] + ToyGame.PLAYER <= g._ball[1]
    # a flying ball bounces off the player as off a wall
    g._player, g._ball, g._ball_v = np.array([20, 10]), np.array([20, 23]), np.array([0, -2])
    assert g.step(0)[1] == 0.0 and g._ball_v[1] == 2 and g._ball[1] == 23
    # two games from one seed stay equal under any keys, and the background stands still
    g1, g2 = ToyGame(push=True), ToyGame(push=True)
    f1, f2 = g1.reset(5), g2.reset(5)
    for a in [4, 4, 1, 1, 3, 2, 2, 0, 4, 4] * 5:
        f1, f2 = g1.step(a)[0], g2.step(a)[0]
        np.testing.assert_array_equal(f1, f2)
    still, scrolling = ToyGame(push=True), ToyGame()
    for game in (still, scrolling):
        first = game.reset(5)
        game._t = 17  # only the background depends on the frame count
        assert np.array_equal(game._render(), first) == (game is still)


def _player_yx(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero((frame == ToyGame.PLAYER_COLOR).all(-1))
    return np.array([ys.min(), xs.min()])


def _alignment_errors(frames: np.ndarray, actions: np.ndarray) -> int:
    """Count transitions where the player moved against the direction of actions[t]."""
    moves = ToyGame._MOVES
    errors = 0
    for t in range(len(frames) - 1):
        d = _player_yx(frames[t + 1]) - _player_yx(frames[t])
        dy, dx = moves[int(actions[t])]
        expected_sign = np.array([dy, dx])
        if (np.sign(d) != expected_sign).any() and np.abs(d).sum() > 0:
            errors += 1  # moved, but not (only) in the direction of actions[t]
    return errors


def test_action_alignment_in_stored_data(tmp_path):
    """actions[t] is chosen after seeing frames[t] and produces frames[t+1]."""
    record(ToyGame(), RandomPolicy(5), tmp_path / "ds", episodes=2, steps=150, seed=11, progress=False)
    ds = open_dataset(tmp_path / "ds")
    for i in range(len(ds)):
        ep = ds[i]
        # Replaying the stored actions in the real game reproduces every stored frame.
        g = ToyGame()
        frame = g.reset(int(ep.meta["seed"]))
        for t in range(len(ep)):
            np.testing.assert_array_equal(frame, ep.frames[t], err_msg=f"frame {t}")
            frame = g.step(int(ep.actions[t]))[0]
        # The sprite moves the way actions[t] says between frames t and t+1...
        assert _alignment_errors(ep.frames, ep.actions) == 0
        # ...and an off-by-one reading (actions[t+1] produces frames[t+1]) is caught.
        assert _alignment_errors(ep.frames[1:], ep.actions[:-1]) > 10


def test_sticky_policy_repeats_and_random_does_not():
    def mean_run(policy):
        policy.reset(0)
        acts = [policy(None) for _ in range(3000)]
        runs = 1 + sum(a != b for a, b in itertools.pairwise(acts))
        return len(acts) / runs

    assert mean_run(StickyPolicy(5)) > 4
    assert mean_run(RandomPolicy(5)) < 1.5


def test_function_policy(tmp_path, monkeypatch):
    (tmp_path / "mypolicies.py").write_text(
        "def always_right(frame):\n    return 'RIGHT'\n\ndef bad(frame):\n    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    p = make_policy("mypolicies:always_right", ToyGame.ACTIONS)
    frames, actions, *_ = play_episode(ToyGame(), p, seed=0, steps=10)
    assert (actions == ToyGame.ACTIONS.index("RIGHT")).all() and len(frames) == 10
    with pytest.raises(WorldplayError, match="out of range"):
        play_episode(ToyGame(), FunctionPolicy("mypolicies:bad", ToyGame.ACTIONS), seed=0, steps=3)
    with pytest.raises(WorldplayError, match="no callable"):
        make_policy("mypolicies:missing", ToyGame.ACTIONS)
    with pytest.raises(WorldplayError, match="cannot import"):
        make_policy("no_such_module_xyz:f", ToyGame.ACTIONS)
    with pytest.raises(WorldplayError, match="unknown policy"):
        make_policy("smart", ToyGame.ACTIONS)


def test_a_policy_module_in_the_current_directory_is_found(tmp_path, monkeypatch):
    """`worldplay rollout --policy myagents:act` from the folder holding myagents.py: the console script's path does
    not hold the current directory, so the policy loader looks there after the installed packages."""
    (tmp_path / "myagents_here.py").write_text("def act(frame):\n    return 'LEFT'\n")
    here = {"", ".", str(tmp_path)}
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in here and p != os.getcwd()])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "myagents_here", raising=False)
    p = make_policy("myagents_here:act", ToyGame.ACTIONS)
    assert p(np.zeros((8, 8, 3), np.uint8)) == ToyGame.ACTIONS.index("LEFT")
    assert sys.path[-1] == str(tmp_path)  # after everything installed: an installed module of the name wins
    with pytest.raises(WorldplayError, match="current directory or on PYTHONPATH"):
        make_policy("myagents_nowhere:act", ToyGame.ACTIONS)


def test_unknown_source():
    with pytest.raises(WorldplayError, match="unknown source"):
        make_source("doom")


def test_ale_boxing(tmp_path):
    src = make_source("ale:Boxing")
    try:
        assert src.action_names[:3] == ("NOOP", "FIRE", "UP") and len(src.action_names) == 18
        record(src, StickyPolicy(len(src.action_names)), tmp_path / "box", episodes=1, steps=40, progress=False)
    finally:
        src.close()
    ds = open_dataset(tmp_path / "box")
    ep = ds[0]
    assert ep.frames.shape == (40, 64, 64, 3) and ds.action_names == src.action_names
    assert ep.meta["frameskip"] == 4 and ep.meta["fps"] == 15.0 and ep.meta["game"] == "ALE/Boxing-v5"
    assert ep.frames.std() > 10  # a real picture, not a blank
    with pytest.raises(WorldplayError, match="no such Atari game"):
        make_source("ale:NoSuchGame")


def test_recording_killed_mid_episode_keeps_earlier_episodes(tmp_path):
    """SIGKILL a recording at random moments: every visible episode is complete and valid."""
    out = tmp_path / "ds"
    rng = random.Random(0)
    steps = 200
    cmd = [sys.executable, "-m", "worldplay", "record", "--source", "toy", "--episodes", "100000",
           "--steps", str(steps), "--out", str(out), "--quiet"]  # fmt: skip
    seen = 0
    for attempt in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        # wait until this run has committed at least two more episodes
        while time.time() < deadline:
            n = len(list((out / "episodes").glob("*.episode"))) if (out / "episodes").exists() else 0
            if n >= seen + 2:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ds, problems = validate_dataset(out)
        assert problems == [], f"attempt {attempt}: {problems}"
        assert ds is not None and len(ds) >= seen + 2
        # complete: the requested frames, or fewer where the game ended (a toy game ends after 8 touches)
        assert all(n == steps or ds[i].terminals[-1] for i, n in enumerate(ds.episode_lengths))
        seen = len(ds)
    assert os.path.exists(out / "dataset.json")
