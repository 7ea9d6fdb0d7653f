"""Evaluation: reconstruction quality of an autoencoder on held-out episodes.

Held-out means the episodes the run itself held out: the split is recomputed
from the checkpoint's own ``data.holdout`` and ``data.seed`` (by hash of episode
name), so on the training dataset these are exactly the episodes it never saw.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay.data.format import open_dataset
from worldplay.data.loader import split_episodes
from worldplay.errors import WorldplayError
from worldplay.metrics import image_grid, psnr, ssim


def _mean_ci(x: np.ndarray) -> dict[str, float]:
    """Mean and a normal-approximation 95% interval of per-episode values."""
    x = np.asarray(x, np.float64)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return {"mean": float(x.mean()), "ci95": [float(x.mean() - half), float(x.mean() + half)]}


def evaluate_autoencoder(
    checkpoint: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    frames_per_episode: int | None = None,
    batch: int = 256,
) -> dict[str, Any]:
    """PSNR and SSIM of reconstructions of held-out frames; writes metrics.json and a PNG grid to ``out``.

    Every frame of each held-out episode, or a random ``frames_per_episode`` of them.
    Intervals are over episodes.
    """
    from worldplay.train.dynamics import load_autoencoder

    ae, meta = load_autoencoder(checkpoint)
    ds = open_dataset(dataset)
    data_cfg = meta["config"]["data"]
    _, held = split_episodes(ds, data_cfg["holdout"], data_cfg["seed"])
    if not held:
        raise WorldplayError(f"{ds.path}: no held-out episode (holdout {data_cfg['holdout']}); nothing to evaluate")
    if tuple(ds.frame_shape) != (ae.config.frame_size, ae.config.frame_size, 3):
        raise WorldplayError(
            f"{ds.path}: frames {ds.frame_shape} do not match the autoencoder's {ae.config.frame_size}"
        )
    graphdef, params = nnx.split(ae)

    @jax.jit
    def recon(p, frames):
        m = nnx.merge(graphdef, p)
        return m.decode(m.encode(frames))

    per_ep: dict[str, list[float]] = {"psnr": [], "ssim": []}
    examples_real, examples_recon = [], []
    rng = np.random.default_rng(0)
    for e in held:
        n = ds.episode_lengths[e]
        k = n if frames_per_episode is None else min(n, frames_per_episode)
        idx = np.sort(rng.choice(n, size=k, replace=False))
        frames = ds[e].frames[idx]
        ps, ss = [], []
        for s in range(0, len(frames), batch):
            chunk = frames[s : s + batch]
            padded = np.zeros((batch, *chunk.shape[1:]), np.uint8)
            padded[: len(chunk)] = chunk
            r = np.asarray(recon(params, jnp.asarray(padded)))[: len(chunk)]
            ps.append(np.asarray(psnr(chunk, r)))
            ss.append(np.asarray(ssim(chunk, r)))
            if len(examples_real) < 8:
                examples_real.append(chunk[len(chunk) // 2])
                examples_recon.append(r[len(chunk) // 2])
        per_ep["psnr"].append(float(np.concatenate(ps).mean()))
        per_ep["ssim"].append(float(np.concatenate(ss).mean()))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    grid = image_grid([np.stack(examples_real), np.stack(examples_recon)])
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(
        out / "reconstructions.png"
    )
    result = {
        "kind": "autoencoder",
        "checkpoint": str(checkpoint),
        "step": meta["step"],
        "dataset": {"path": str(ds.path), "fingerprint": ds.fingerprint()},
        "heldout_episodes": len(held),
        "frames": int(sum(min(ds.episode_lengths[e], frames_per_episode or 10**12) for e in held)),
        "psnr": _mean_ci(per_ep["psnr"]),
        "ssim": _mean_ci(per_ep["ssim"]),
        "grid": "reconstructions.png (top: held-out frames, bottom: reconstructions)",
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def paired_windows(
    ds: Any, episodes: list[int], count: int, length: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` real windows of ``length`` frames from ``episodes``: frames [B, L, H, W, 3], actions [B, L]."""
    rng = np.random.default_rng(seed)
    usable = [e for e in episodes if ds.episode_lengths[e] >= length]
    if not usable:
        raise WorldplayError(f"{ds.path}: no held-out episode of at least {length} frames")
    frames, actions = [], []
    for k in range(count):
        e = usable[k % len(usable)]
        start = int(rng.integers(0, ds.episode_lengths[e] - length + 1))
        f, a = ds.read_window(e, start, length)
        frames.append(f)
        actions.append(a)
    return np.stack(frames), np.stack(actions).astype(np.int32)


def rollout_psnr(
    world: Any, frames: np.ndarray, actions: np.ndarray, prompt: int, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """PSNR [B, H] against the real frames after ``prompt`` frames: the world driven by the recorded
    actions, by the same actions shuffled across streams and time, and repeating the last prompt frame.

    ``actions[:, t]`` produced ``frames[:, t + 1]``; the world starts from ``frames[:, :prompt]``.
    """
    B, L = actions.shape
    horizon = L - prompt
    real = frames[:, prompt:]
    true_acts = actions[:, prompt - 1 : L - 1]
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(true_acts.reshape(-1)).reshape(true_acts.shape)

    def play(acts: np.ndarray) -> np.ndarray:
        state = world.start(frames[:, :prompt], actions[:, : prompt - 1], seed=seed)
        out = []
        for k in range(horizon):
            state, frame = world.step(state, acts[:, k])
            out.append(frame)
        return np.stack(out, axis=1)

    def score(pred: np.ndarray) -> np.ndarray:
        flat = (B * horizon, *real.shape[2:])
        return np.asarray(psnr(real.reshape(flat), pred.reshape(flat))).reshape(B, horizon)

    repeat = np.broadcast_to(frames[:, prompt - 1 : prompt], real.shape)
    return {"world": score(play(true_acts)), "random_actions": score(play(shuffled)), "repeat_last": score(repeat)}
