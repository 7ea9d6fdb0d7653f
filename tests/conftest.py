"""Shared fixtures: small datasets recorded from the built-in toy game in well under a second."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from worldplay.data.record import record
from worldplay.data.sources import RandomPolicy, StickyPolicy, ToyGame


def record_toy(out: Path, episodes: int = 6, steps: int = 120, seed: int = 0, policy=None) -> Path:
    policy = policy or StickyPolicy(5)
    record(ToyGame(), policy, out, episodes=episodes, steps=steps, seed=seed, progress=False)
    return out


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """A read-only toy dataset: 6 episodes of 120 frames. Tests must not modify it."""
    return record_toy(tmp_path_factory.mktemp("toy") / "ds")


@pytest.fixture
def fresh_toy_dataset(tmp_path) -> Path:
    """A toy dataset a test may modify: 4 episodes of 40 frames."""
    return record_toy(tmp_path / "ds", episodes=4, steps=40)


# The trained toy world: both stages on CPU with a fixed, small budget, shared by every test that needs a
# world that has learned something (dynamics learning, play, evaluation). About five minutes on 2 cores.
TOY_WORLD_SETS = [
    "data.holdout=0.2",
    "autoencoder.channels=[16, 32, 64]", "autoencoder.blocks=1",
    "train_autoencoder.batch_size=16", "train_autoencoder.steps=600", "train_autoencoder.warmup=20",
    "train_autoencoder.lr=3e-3", "train_autoencoder.eval_every=600", "train_autoencoder.checkpoint_every=600",
    "train_autoencoder.eval_batches=2",
    "train_dynamics.batch_size=16", "train_dynamics.steps=3000", "train_dynamics.warmup=20",
    "train_dynamics.lr=3e-3", "train_dynamics.eval_every=3000", "train_dynamics.checkpoint_every=3000",
    "train_dynamics.eval_batches=2",
]  # fmt: skip


@pytest.fixture(scope="session")
def toy_world_run(tmp_path_factory) -> dict:
    """Record 30 toy episodes, train the toy config's autoencoder and dynamics; returns paths."""
    from worldplay.config import load_config
    from worldplay.train.autoencoder import train_autoencoder
    from worldplay.train.dynamics import train_dynamics

    root = tmp_path_factory.mktemp("toyworld")
    # the random policy keeps the player away from the walls, where the keys show (sticky runs into corners)
    data = record_toy(root / "data", episodes=30, steps=200, seed=100, policy=RandomPolicy(5))
    sets = [f"data.dataset={data}", f"train_autoencoder.runs_dir={root / 'runs'}",
            f"train_dynamics.runs_dir={root / 'runs'}", *TOY_WORLD_SETS]  # fmt: skip
    cfg = load_config(Path(__file__).parent.parent / "configs" / "toy.toml", sets)
    ae = train_autoencoder(cfg, progress=False)
    dyn = train_dynamics(cfg, progress=False)
    return {"config": cfg, "dataset": data, "world": Path(dyn["world"]), "autoencoder": ae, "dynamics": dyn}
