"""Video files are read and written in process: no ffmpeg child (forking after JAX has started its threads
is the deadlock hazard JAX warns about), frames survive the round trip, odd sizes are padded."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from worldplay.video import iter_video, write_video


@pytest.fixture
def no_child_processes(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a child process was started")

    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def _frames(n: int = 12, h: int = 64, w: int = 64) -> np.ndarray:
    """Smooth moving gradients (video codecs are made for these, not for noise)."""
    y, x = np.mgrid[:h, :w]
    return np.stack([np.stack([(x * 4 + 8 * t) % 256, (y * 4) % 256, np.full_like(x, 40 * (t % 6))], -1)
                     for t in range(n)]).astype(np.uint8)  # fmt: skip


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_round_trip_without_a_child_process(tmp_path, no_child_processes, suffix):
    frames = _frames()
    path = write_video(tmp_path / f"v{suffix}", frames, fps=15)
    back = np.stack(list(iter_video(path)))
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 6  # lossy, but the same pictures
    assert [p.name for p in tmp_path.iterdir()] == [f"v{suffix}"]  # written atomically, no temporary left


def test_scaled_and_odd_sized_frames(tmp_path, no_child_processes):
    path = write_video(tmp_path / "s.mp4", _frames(4, 64, 64), fps=15, scale=4)
    assert next(iter_video(path)).shape == (256, 256, 3)
    path = write_video(tmp_path / "odd.mp4", _frames(4, 63, 61), fps=15)  # H.264 4:2:0 needs even sides
    assert next(iter_video(path)).shape == (64, 62, 3)
