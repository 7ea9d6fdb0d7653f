"""Shared fixtures: small datasets recorded from the built-in toy game in well under a second."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from worldplay.data.record import record
from worldplay.data.sources import StickyPolicy, ToyGame


def record_toy(out: Path, episodes: int = 6, steps: int = 120, seed: int = 0) -> Path:
    record(ToyGame(), StickyPolicy(5), out, episodes=episodes, steps=steps, seed=seed, progress=False)
    return out


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """A read-only toy dataset: 6 episodes of 120 frames. Tests must not modify it."""
    return record_toy(tmp_path_factory.mktemp("toy") / "ds")


@pytest.fixture
def fresh_toy_dataset(tmp_path) -> Path:
    """A toy dataset a test may modify: 4 episodes of 40 frames."""
    return record_toy(tmp_path / "ds", episodes=4, steps=40)
