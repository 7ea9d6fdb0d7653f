"""Record episodes from a source played by a policy into a dataset (``worldplay record``)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldplay.data.format import DatasetWriter
from worldplay.data.sources import Source, StopRecording
from worldplay.policies import Policy


def play_episode(
    source: Source,
    policy: Policy,
    *,
    seed: int,
    steps: int | None = None,
    on_frame: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Play one episode; return ``(frames, actions, rewards, terminals, stopped)``.

    ``actions[t]`` is chosen by the policy after it sees ``frames[t]`` and produces
    ``frames[t + 1]``; the episode ends when the game ends, after ``steps`` frames,
    or when an interactive policy raises :class:`StopRecording` (``stopped``).
    """
    frame = source.reset(seed)
    policy.reset(seed)
    frames, actions, rewards, terminals = [], [], [], []
    stopped = False
    while steps is None or len(frames) < steps:
        try:
            action = policy(frame)
        except StopRecording:
            stopped = True
            break
        frames.append(frame)
        actions.append(action)
        frame, reward, terminated, truncated = source.step(action)
        rewards.append(reward)
        terminals.append(terminated)
        if on_frame is not None:
            on_frame()
        if terminated or truncated:
            break
    shape = (0, *source.frame_shape)
    return (
        np.stack(frames) if frames else np.zeros(shape, np.uint8),
        np.asarray(actions, np.int32),
        np.asarray(rewards, np.float32),
        np.asarray(terminals, bool),
        stopped,
    )


def record(
    source: Source,
    policy: Policy,
    out: str | os.PathLike[str],
    *,
    episodes: int,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Record ``episodes`` episodes (seeds ``seed``, ``seed+1``, ...) and append them to ``out``.

    Each episode is written atomically as soon as it ends, so a recording that is
    interrupted keeps every finished episode.
    """
    writer = DatasetWriter.create(out, frame_shape=source.frame_shape, action_names=source.action_names, fps=source.fps)
    written: list[Path] = []
    total = episodes * steps if steps else None
    with tqdm(total=total, unit="frame", disable=not progress, desc=f"record {out}") as bar:
        for i in range(episodes):
            ep_seed = seed + i
            frames, actions, rewards, terminals, stopped = play_episode(
                source, policy, seed=ep_seed, steps=steps, on_frame=lambda: bar.update(1)
            )
            if len(frames):
                meta = {
                    **source.metadata(),
                    "seed": ep_seed,
                    "policy": policy.name,
                    "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                }
                written.append(writer.write_episode(frames, actions, rewards=rewards, terminals=terminals, meta=meta))
            if stopped:
                break
    return written
