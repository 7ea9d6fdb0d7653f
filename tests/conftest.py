"""Shared fixtures: small toy datasets recorded in well under a second, and a trained toy world."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

# The tests compile hundreds of small XLA programs and run most of them once or twice: without LLVM's
# optimisation they compile 3-4x faster (the maths is the same). Set before JAX starts. The one long computation,
# training the toy world, runs in a subprocess with the caller's own flags (it trains 2x faster optimised).
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS")
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = f"{USER_XLA_FLAGS or ''} {FAST_COMPILE}".strip()
ROOT = Path(__file__).parent.parent

from worldplay.data.record import record  # noqa: E402  (after XLA_FLAGS)
from worldplay.data.sources import RandomPolicy, StickyPolicy, ToyGame  # noqa: E402


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
# world that has learned something (dynamics learning, play, evaluation). About eight minutes on 2 cores.
# It samples with one Euler step, as the shipped world does: cheaper to run and, at this budget, the keys
# gain more at horizon 4 than with 4 steps (1.9 vs 1.5 dB, docs/evaluation.md).
TOY_WORLD_SETS = [
    "data.holdout=0.2", "dynamics.sampling_steps=1",
    "autoencoder.channels=[16, 32, 64]", "autoencoder.blocks=1",
    "train_autoencoder.batch_size=16", "train_autoencoder.steps=600", "train_autoencoder.warmup=20",
    "train_autoencoder.lr=3e-3", "train_autoencoder.eval_every=600", "train_autoencoder.checkpoint_every=600",
    "train_autoencoder.eval_batches=2",
    "train_dynamics.batch_size=16", "train_dynamics.steps=2000", "train_dynamics.warmup=20",
    "train_dynamics.lr=3e-3", "train_dynamics.eval_every=2000", "train_dynamics.checkpoint_every=2000",
    "train_dynamics.eval_batches=2",
]  # fmt: skip


@pytest.fixture(scope="session")
def toy_world_run(tmp_path_factory) -> dict:
    """Record 30 toy episodes, train the toy config's autoencoder and dynamics (`worldplay train`); returns paths."""
    from worldplay.config import load_config

    root = tmp_path_factory.mktemp("toyworld")
    # the random policy keeps the player away from the walls, where the keys show (sticky runs into corners)
    data = record_toy(root / "data", episodes=30, steps=200, seed=100, policy=RandomPolicy(5))
    sets = [f"data.dataset={data}", f"train_autoencoder.runs_dir={root / 'runs'}",
            f"train_dynamics.runs_dir={root / 'runs'}", *TOY_WORLD_SETS]  # fmt: skip
    config = ROOT / "configs" / "toy.toml"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if USER_XLA_FLAGS is not None:
        env["XLA_FLAGS"] = USER_XLA_FLAGS
    for stage in ("autoencoder", "dynamics"):
        cmd = [sys.executable, "-m", "worldplay", "train", stage, "--config", str(config), "--quiet"]
        done = subprocess.run([*cmd, *(a for s in sets for a in ("--set", s))], env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"training the toy {stage} failed:\n{done.stdout}\n{done.stderr}"
    cfg = load_config(config, sets)
    return {"config": cfg, "dataset": data, "world": root / "runs" / "toy" / "dynamics" / "world"}
