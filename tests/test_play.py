"""`worldplay play` before a trained world exists: the toy game, windowed or headless."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np

from worldplay.cli import main
from worldplay.data.sources import ToyGame
from worldplay.play import play_source


def test_headless_writes_requested_frames(tmp_path, capsys):
    out = tmp_path / "play.mp4"
    assert main(["play", "--headless", "--keys", "RIGHT*10,DOWN*5", "--video", str(out)]) == 0
    assert "built-in toy game" in capsys.readouterr().err
    frames = list(iio.imiter(out, plugin="FFMPEG"))
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


def test_no_display_gives_a_clear_error(monkeypatch, capsys):
    for var in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    assert main(["play"]) == 2
    err = capsys.readouterr().err
    assert "no display" in err and "--headless --keys" in err


def test_checkpoint_argument_is_refused_honestly(capsys):
    assert main(["play", "some/world"]) == 2
    assert "cannot load trained worlds yet" in capsys.readouterr().err
