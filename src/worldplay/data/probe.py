"""How hard a game will be for a world, measured on the game itself before recording a dataset.

``worldplay probe ale:GAME`` plays a few episodes of the recording policy. Every ``every`` steps it saves the
emulator's state, lets the policy play ``H`` steps on (the real future), then goes back to the saved state
and plays ``H`` uniformly random keys instead (the future with other keys). Pooled over all such starts,
per horizon h:

- ``repeat_last_psnr``: PSNR of repeating the start frame, against the real future. A world beats repeat-last
  at h only if its own PSNR there is higher. Its frames are never better than its autoencoder's, so a game
  whose repeat-last PSNR lies above the autoencoder's floor cannot be beaten at that horizon.
- ``key_effect_psnr``: PSNR between the real future and the future with random keys: how much the keys change
  the frames (capped at 100 dB, as ``worldplay eval`` caps identical frames, for keys that do nothing).
- ``key_share``: the keys' effect over the natural change (mean squared differences, the second against the
  start frame); None where the frames never change but the keys change them.
- ``delta_at_repeat_last``: ``10 log10(1 + key_share)``, the delta-PSNR (recorded keys against random ones,
  as ``worldplay eval`` measures it) of a world that follows the keys exactly and errs as much as repeating
  the last frame does. A world with the mean squared error ``e`` at h reaches at most about
  ``10 log10(1 + effect / e)``: a world better than repeat-last can score more, one that ignores the keys
  scores 0.

Frames are compared as the dataset would store them (the source's size). Starts whose real future ends the
episode within ``H`` steps are skipped; a random future that ends early keeps its last frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from worldplay.data.sources import Source
from worldplay.errors import WorldplayError
from worldplay.policies import Policy

WARMUP = 20  # steps of each episode before the first start (title screens, the first frames of a level)
PSNR_CAP_DB = 100.0  # identical frames, as worldplay.metrics.PSNR_CAP_DB (not imported: the probe runs without JAX)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float32) - b.astype(np.float32)
    return float(np.mean(d * d)) / 255.0**2


def _psnr(mse: float) -> float:
    return PSNR_CAP_DB if mse <= 0 else min(float(-10.0 * np.log10(mse)), PSNR_CAP_DB)


def probe_game(
    source: Source,
    policy: Policy,
    *,
    episodes: int = 4,
    steps: int = 800,
    horizons: Sequence[int] = (1, 4, 8, 16),
    every: int = 29,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Play ``episodes`` of ``policy`` in ``source`` (at most ``steps`` steps each) and measure, from a start
    every ``every`` steps, repeat-last and the keys' effect at ``horizons`` (see the module docstring)."""
    if not hasattr(source, "clone_state"):
        raise WorldplayError(f"{source.metadata()['source']}: cannot save and restore its state; probe ale:GAME or toy")
    horizons = sorted({int(h) for h in horizons})
    if not horizons or horizons[0] < 1:
        raise WorldplayError(f"--horizons {horizons}: give horizons of 1 or more, e.g. 1,4,8,16")
    H = horizons[-1]
    if every < H:
        raise WorldplayError(f"--every {every}: must be at least the longest horizon ({H}), so futures do not overlap")
    n_actions = len(source.action_names)
    rng = np.random.default_rng([seed, 7])
    change, effect = np.zeros(H), np.zeros(H)
    starts = identical = pairs = frames_played = 0
    bar = tqdm(total=episodes * steps, disable=not progress, desc="probe", unit="step")
    for ep in range(episodes):
        policy.reset(seed + ep)
        frame = source.reset(seed + ep)
        t, done = 0, False
        while t < steps and not done:
            start = t >= WARMUP and (t - WARMUP) % every == 0 and t + H <= steps
            saved = source.clone_state() if start else None
            first = frame
            real: list[np.ndarray] = []
            for _ in range(H if start else 1):
                nxt, _, terminated, truncated = source.step(policy(frame))
                identical += int(np.array_equal(nxt, frame))
                pairs += 1
                frame, t, done = nxt, t + 1, terminated or truncated
                real.append(frame)
                bar.update(1)
                if done:
                    break
            if saved is not None and not done:  # not done: the real future ran all H steps
                here = source.clone_state()
                source.restore_state(saved)
                other: list[np.ndarray] = []
                last, ended = first, False
                for a in rng.integers(n_actions, size=H):
                    if not ended:
                        last, _, terminated, truncated = source.step(int(a))
                        ended = terminated or truncated
                    other.append(last)
                source.restore_state(here)
                for h in range(H):
                    change[h] += _mse(real[h], first)
                    effect[h] += _mse(real[h], other[h])
                starts += 1
        frames_played += t
    bar.close()
    if starts == 0:
        raise WorldplayError(
            f"{source.metadata()['source']}: no start with {H} steps of future in {episodes} episodes of "
            f"{steps} steps; raise --steps or --episodes, or lower --horizons"
        )
    rows = []
    for h in horizons:
        c, e = change[h - 1] / starts, effect[h - 1] / starts
        share = e / c if c > 0 else None if e > 0 else 0.0  # None: only the keys change the frames
        rows.append(
            {
                "horizon": h,
                "repeat_last_psnr": _psnr(c),
                "key_effect_psnr": _psnr(e),
                "key_share": share,
                "delta_at_repeat_last": None if share is None else float(10.0 * np.log10(1.0 + share)),
            }
        )
    return {
        "source": source.metadata(),
        "policy": policy.name,
        "episodes": episodes,
        "steps_played": frames_played,
        "starts": starts,
        "identical_frames": identical / max(pairs, 1),
        "horizons": rows,
    }
