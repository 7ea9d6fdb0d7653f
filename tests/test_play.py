"""`worldplay play --game`: a real game (the toy game) in the play window, windowed or headless."""

from __future__ import annotations

import numpy as np

from worldplay.cli import main
from worldplay.data.sources import ToyGame
from worldplay.play import play_source
from worldplay.video import iter_video


def test_headless_writes_requested_frames(tmp_path, capsys):
    out = tmp_path / "play.mp4"
    assert main(["play", "--game", "toy", "--headless", "--keys", "RIGHT*10,DOWN*5", "--video", str(out)]) == 0
    assert "the real game toy" in capsys.readouterr().err
    frames = list(iter_video(out))
    assert len(frames) == 16  # the start frame and one per key
    assert frames[0].shape[0] >= 64


def test_keys_drive_the_game():
    right = play_source(ToyGame(), title="t", headless=True, keys="RIGHT*6")
    left = play_source(ToyGame(), title="t", headless=True, keys="LEFT*6")
    np.testing.assert_array_equal(right[0], left[0])
    assert not np.array_equal(right[-1], left[-1])


def test_window_under_dummy_driver_runs_the_script(tmp_path):
    # SDL_VIDEODRIVER=dummy (set in conftest) gives a real pygame window without a screen.
    frames = play_source(ToyGame(), title="t", keys="UP*4", video=tmp_path / "w.gif")
    assert len(frames) == 5 and (tmp_path / "w.gif").exists()


def _post(pg, type_, key):
    pg.event.post(pg.event.Event(type_, key=key))


def test_human_policy_follows_posted_keys_and_stops_on_escape(tmp_path):
    """`record --policy human` under SDL's dummy driver, driven by posted key events."""
    import pygame as pg

    from worldplay import open_dataset
    from worldplay.data.record import record
    from worldplay.policies.human import HumanPolicy

    policy = HumanPolicy(ToyGame.ACTIONS, fps=1000)
    frame = ToyGame().reset(0)
    policy.reset(0)
    assert ToyGame.ACTIONS[policy(frame)] == "NOOP"  # opens the window
    _post(pg, pg.KEYDOWN, pg.K_RIGHT)
    assert ToyGame.ACTIONS[policy(frame)] == "RIGHT"
    assert ToyGame.ACTIONS[policy(frame)] == "RIGHT"  # still held
    _post(pg, pg.KEYUP, pg.K_RIGHT)
    _post(pg, pg.KEYDOWN, pg.K_UP)
    assert ToyGame.ACTIONS[policy(frame)] == "UP"
    _post(pg, pg.KEYUP, pg.K_UP)

    # A whole recording: hold DOWN for the first frames, then Esc ends and keeps the episode.
    class Scripted(HumanPolicy):
        def __call__(self, frame):
            if self._frames == 0:
                _post(pg, pg.KEYDOWN, pg.K_DOWN)
            if self._frames == 5:
                _post(pg, pg.KEYDOWN, pg.K_ESCAPE)
            return super().__call__(frame)

    record(ToyGame(), Scripted(ToyGame.ACTIONS, fps=1000), tmp_path / "me", episodes=3, steps=50, progress=False)
    ds = open_dataset(tmp_path / "me")
    assert len(ds) == 1 and len(ds[0]) == 5  # Esc stopped the session after 5 frames
    assert [ToyGame.ACTIONS[a] for a in ds[0].actions] == ["DOWN"] * 5
    assert ds.episode_meta(0)["policy"] == "human"
