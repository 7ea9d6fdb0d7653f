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
