"""Evaluation: reconstruction quality of an autoencoder on held-out episodes.

Held-out means the episodes the run itself held out: the split is recomputed
from the checkpoint's own ``data.holdout`` and ``data.seed`` (by hash of episode
name), so on the training dataset these are exactly the episodes it never saw.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from worldplay.data.format import open_dataset
from worldplay.data.loader import split_episodes
from worldplay.errors import WorldplayError
from worldplay.metrics import PSNR_CAP_DB, image_grid, mean_ci95, psnr, ssim
from worldplay.models import reward as reward_model


def _mean_ci(x: np.ndarray) -> dict[str, float]:
    """Mean and a normal-approximation 95% interval of per-episode values (NaN bounds for one value)."""
    mean, half = mean_ci95(x, single=float("nan"))
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def evaluate_autoencoder(
    checkpoint: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    frames_per_episode: int | None = None,
    batch: int = 256,
) -> dict[str, Any]:
    """PSNR and SSIM of reconstructions of held-out frames; writes metrics.json and a PNG grid to ``out``.

    Every frame of each held-out episode, or a random ``frames_per_episode`` of them: the run's own held-out
    split of its training dataset, or every episode of another dataset (a validation set). Intervals are over
    episodes. ``psnr_moving``: PSNR over the pixels that changed since the previous frame.
    """
    from worldplay.train.dynamics import load_autoencoder

    ae, meta = load_autoencoder(checkpoint)
    ds = open_dataset(dataset)
    data_cfg = meta["config"]["data"]
    # an autoencoder run records its dataset's path, not its fingerprint: one not found here counts as ``ds``
    trained_on = Path(data_cfg["dataset"])
    trained = open_dataset(trained_on) if (trained_on / "dataset.json").is_file() else ds
    held, how = _held_out_split(ds, trained.fingerprint(), data_cfg)
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

    per_ep: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_moving": [], "moving_share": []}
    examples_real, examples_recon = [], []
    rng = np.random.default_rng(0)
    for e in held:
        n = ds.episode_lengths[e]
        k = n if frames_per_episode is None else min(n, frames_per_episode)
        idx = np.sort(rng.choice(n, size=k, replace=False))
        before = np.maximum(idx - 1, 0)
        needed = np.union1d(idx, before)  # each frame decoded once, whether scored or only compared with
        read = ds[e].frames[needed]
        frames, previous = read[np.searchsorted(needed, idx)], read[np.searchsorted(needed, before)]
        ps, ss = [], []
        moving_se, moving_px = 0.0, 0
        for s in range(0, len(frames), batch):
            chunk = frames[s : s + batch]
            padded = np.zeros((batch, *chunk.shape[1:]), np.uint8)
            padded[: len(chunk)] = chunk
            r = np.asarray(recon(params, jnp.asarray(padded)))[: len(chunk)]
            ps.append(np.asarray(psnr(chunk, r)))
            ss.append(np.asarray(ssim(chunk, r)))
            # the pixels that changed since the previous frame: where repeating the last frame errs
            moved = np.any(chunk != previous[s : s + batch], axis=-1) & (idx[s : s + batch] > 0)[:, None, None]
            err = np.mean((chunk.astype(np.float64) - r.astype(np.float64)) ** 2, axis=-1)
            moving_se += float(err[moved].sum())
            moving_px += int(moved.sum())
            if len(examples_real) < 8:
                examples_real.append(chunk[len(chunk) // 2])
                examples_recon.append(r[len(chunk) // 2])
        per_ep["psnr"].append(float(np.concatenate(ps).mean()))
        per_ep["ssim"].append(float(np.concatenate(ss).mean()))
        per_ep["moving_share"].append(moving_px / (len(frames) * frames.shape[1] * frames.shape[2]))
        if moving_px:
            per_ep["psnr_moving"].append(float(psnr_from_mse(moving_se / moving_px)))
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
        "episodes": how,
        "frames": int(sum(min(ds.episode_lengths[e], frames_per_episode or 10**12) for e in held)),
        "psnr": _mean_ci(per_ep["psnr"]),
        "ssim": _mean_ci(per_ep["ssim"]),
        # PSNR over the pixels that changed since the previous frame (pooled per episode): sprites that move
        "psnr_moving": _mean_ci(per_ep["psnr_moving"]) if per_ep["psnr_moving"] else None,
        "moving_share": float(np.mean(per_ep["moving_share"])),
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

    def play(acts: np.ndarray) -> np.ndarray:  # all B streams in one batch, one seed
        return drive(world, frames[:, :prompt], actions[:, : prompt - 1], acts, seed=seed, batch=B)

    def score(pred: np.ndarray) -> np.ndarray:
        flat = (B * horizon, *real.shape[2:])
        return np.asarray(psnr(real.reshape(flat), pred.reshape(flat))).reshape(B, horizon)

    repeat = np.broadcast_to(frames[:, prompt - 1 : prompt], real.shape)
    return {"world": score(play(true_acts)), "random_actions": score(play(shuffled)), "repeat_last": score(repeat)}


# ---------------------------------------------------------------------------
# Worlds: paired rollouts on held-out episodes, baselines, drift, the live game
# ---------------------------------------------------------------------------

DEFAULT_HORIZONS = (1, 2, 4, 8, 16, 32, 64)
METHODS = ("world", "repeat_last", "random_actions")


def psnr_from_mse(mse: np.ndarray, cap: float = PSNR_CAP_DB) -> np.ndarray:
    """PSNR in dB of uint8 images from their mean squared error, capped at ``cap`` (identical images)."""
    mse = np.asarray(mse, np.float64)
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(255.0**2 / mse), cap)


def frame_errors(real_NHWC: np.ndarray, pred_NHWC: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mean squared error and SSIM of uint8 frames: [N, H, W, 3] twice -> ([N], [N])."""
    mse, s = [], []
    for i in range(0, len(real_NHWC), chunk):
        a = np.asarray(real_NHWC[i : i + chunk], np.float32)
        b = np.asarray(pred_NHWC[i : i + chunk], np.float32)
        mse.append(np.mean((a - b) ** 2, axis=(1, 2, 3)))
        s.append(np.asarray(_ssim_jit(real_NHWC[i : i + chunk], pred_NHWC[i : i + chunk])))
    return np.concatenate(mse), np.concatenate(s)


_ssim_jit = jax.jit(ssim)


def summarize(mse_BH: np.ndarray, ssim_BH: np.ndarray, group_B: np.ndarray) -> dict[str, Any]:
    """Per-horizon PSNR and SSIM, mean and 95% interval over groups (episodes or live streams).

    A group's PSNR is that of its pooled squared error (the mean MSE of its windows), so one identical
    frame (infinite PSNR) cannot dominate an average; only a group whose every frame is exact is capped.
    """
    groups = np.unique(group_B)
    H = mse_BH.shape[1]
    p = np.zeros((len(groups), H))
    s = np.zeros((len(groups), H))
    for i, g in enumerate(groups):
        rows = group_B == g
        p[i] = psnr_from_mse(np.nanmean(mse_BH[rows], axis=0))
        s[i] = np.nanmean(ssim_BH[rows], axis=0)
    out: dict[str, Any] = {}
    for name, v in (("psnr", p), ("ssim", s)):
        stats = [_mean_ci(v[:, h]) for h in range(H)]
        out[name] = [x["mean"] for x in stats]
        out[f"{name}_ci95"] = [x["ci95"] for x in stats]
    return out


def frechet_distance(x_ND: np.ndarray, y_MD: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets: |mu_x - mu_y|^2 + Tr(Sx + Sy - 2 (Sx Sy)^1/2)."""
    x, y = np.asarray(x_ND, np.float64), np.asarray(y_MD, np.float64)
    mx, my = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(sx)
    root_x = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_x @ sy @ root_x)  # eigenvalues of Sx^1/2 Sy Sx^1/2 = those of Sx Sy
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(np.sum((mx - my) ** 2) + np.trace(sx) + np.trace(sy) - 2.0 * trace_root)


def latent_features(z_NhwC: np.ndarray) -> np.ndarray:
    """Autoencoder features for Fréchet distances: normalised latents average-pooled to 2x2 cells [N, 4C]."""
    z = np.asarray(z_NhwC, np.float32)
    N, h, w, C = z.shape
    return z.reshape(N, 2, h // 2, 2, w // 2, C).mean(axis=(2, 4)).reshape(N, 4 * C)


def held_out_episodes(model: Any, ds: Any) -> tuple[list[int], str]:
    """The episodes of ``ds`` a model (a world, or an IDM: anything with ``meta``) did not train on, and a
    sentence saying how they were chosen."""
    return _held_out_split(ds, model.meta.get("dataset", {}).get("fingerprint"), model.meta.get("data"))


def _held_out_split(ds: Any, trained_fingerprint: str | None, split: dict[str, Any] | None) -> tuple[list[int], str]:
    """The held-out split of ``ds`` if it is the dataset trained on (by fingerprint), else all its episodes."""
    if trained_fingerprint == ds.fingerprint():
        if not split:
            raise WorldplayError(
                f"{ds.path} is the dataset this model trained on, but the model does not say which episodes "
                "it held out (its metadata has no 'data' section with 'holdout' and 'seed')"
            )
        _, held = split_episodes(ds, split["holdout"], split["seed"])
        return held, f"the model's own held-out split (holdout {split['holdout']}, seed {split['seed']})"
    return list(range(len(ds))), "all episodes (not the dataset the model trained on)"


def episode_windows(
    ds: Any, episodes: list[int], per_episode: int, length: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_episode`` windows of ``length`` frames from each usable episode, at evenly spread random starts.

    Returns frames [B, L, H, W, 3], actions [B, L] and the episode of each window [B].
    """
    rng = np.random.default_rng(seed)
    usable = [e for e in episodes if ds.episode_lengths[e] >= length]
    if not usable:
        raise WorldplayError(
            f"{ds.path}: no held-out episode has {length} frames (prompt + longest horizon); use shorter --horizons"
        )
    frames, actions, group = [], [], []
    for e in usable:
        span = ds.episode_lengths[e] - length + 1
        edges = np.linspace(0, span, per_episode + 1).astype(int)
        for k in range(per_episode):
            start = int(rng.integers(edges[k], max(edges[k + 1], edges[k] + 1)))
            f, a = ds.read_window(e, start, length)
            frames.append(f)
            actions.append(a)
            group.append(e)
    return np.stack(frames), np.stack(actions).astype(np.int32), np.asarray(group)


def drive(
    world: Any,
    prompt_frames: np.ndarray,
    prompt_actions: np.ndarray,
    actions_BH: np.ndarray,
    *,
    seed: int = 0,
    guidance: float | None = None,
    batch: int = 32,
    progress: Any = None,
) -> np.ndarray:
    """Frames [B, H, ...] generated from prompts [B, P, ...] (actions between them [B, P - 1]) by actions [B, H]."""
    out = []
    for i in range(0, len(prompt_frames), batch):
        state = world.start(prompt_frames[i : i + batch], prompt_actions[i : i + batch], seed=seed + i)
        chunk = []
        for k in range(actions_BH.shape[1]):
            state, f = world.step(state, actions_BH[i : i + batch, k], guidance)
            chunk.append(f)
            if progress is not None:
                progress.update(len(f))
        out.append(np.stack(chunk, axis=1))
    return np.concatenate(out)


def paired_evaluation(
    world: Any,
    frames: np.ndarray,
    actions: np.ndarray,
    group: np.ndarray,
    prompt: int,
    *,
    seed: int = 0,
    guidance: float | None = None,
    progress: bool = True,
    valid_BH: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Roll the world out from real prompts with the recorded and with uniformly random actions; score them and
    the repeat-last-frame baseline against the real frames. Returns (per-method summaries, generated frames).

    ``valid_BH`` (optional) marks the frames to score (a live game may end before the longest horizon).
    """
    B, L = actions.shape
    H = L - prompt
    real = frames[:, prompt:]
    true_acts = actions[:, prompt - 1 : L - 1]  # actions[:, t] produced frames[:, t + 1]
    random_acts = np.random.default_rng([seed, 3]).integers(0, len(world.action_names), true_acts.shape)
    generated = {}
    with tqdm(total=2 * B * H, unit="frame", desc="paired rollouts", disable=not progress) as bar:
        for name, acts in (("world", true_acts), ("random_actions", random_acts)):
            generated[name] = drive(
                world, frames[:, :prompt], actions[:, : prompt - 1], acts, seed=seed, guidance=guidance, progress=bar
            )
    generated["repeat_last"] = np.broadcast_to(frames[:, prompt - 1 : prompt], real.shape)
    flat = (B * H, *real.shape[2:])
    summaries = {}
    for name in METHODS:
        mse, s = frame_errors(real.reshape(flat), np.ascontiguousarray(generated[name]).reshape(flat))
        mse, s = mse.reshape(B, H), s.reshape(B, H)
        if valid_BH is not None:
            mse, s = np.where(valid_BH, mse, np.nan), np.where(valid_BH, s, np.nan)
        summaries[name] = summarize(mse, s, group)
    return summaries, generated


def drift_evaluation(
    world: Any,
    prompt_frames: np.ndarray,
    prompt_actions: np.ndarray,
    reference_features: np.ndarray,
    real_frame_change: float,
    *,
    minutes: float,
    seed: int = 0,
    guidance: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``minutes`` of play per stream under a sticky-random policy; per minute, the Fréchet distance of
    the generated frames' autoencoder features to those of real frames, and the mean change between frames
    (a world that freezes shows it there; one that collapses shows it in both)."""
    from worldplay.policies import StickyPolicy

    per_minute = round(60 * world.fps)
    total = max(1, round(minutes * 60 * world.fps))
    S = len(prompt_frames)
    policies = [StickyPolicy(len(world.action_names)) for _ in range(S)]
    for i, p in enumerate(policies):
        p.reset(seed + i)
    state = world.start(prompt_frames, prompt_actions, seed=seed)
    frame = prompt_frames[:, -1]
    feats: list[np.ndarray] = []
    change: list[float] = []
    result: dict[str, Any] = {"policy": "sticky", "streams": S, "frames_per_stream": total, "minutes": []}
    result.update(frechet=[], frame_change=[])

    def close_minute(end: int) -> None:
        result["minutes"].append(round(end / (60 * world.fps), 3))
        result["frechet"].append(frechet_distance(np.concatenate(feats), reference_features))
        result["frame_change"].append(float(np.mean(change)))
        feats.clear()
        change.clear()

    with tqdm(total=total * S, unit="frame", desc="drift", disable=not progress) as bar:
        for t in range(total):
            acts = np.asarray([p(f) for p, f in zip(policies, frame, strict=True)], np.int32)
            state, new, z = world.step_latent(state, acts, guidance)
            new = np.asarray(new)
            feats.append(latent_features(np.asarray(z)))
            change.append(float(np.mean(np.abs(new.astype(np.int16) - frame.astype(np.int16)))))
            frame = new
            bar.update(S)
            if (t + 1) % per_minute == 0 or t + 1 == total:
                close_minute(t + 1)
    result["real_frame_change"] = real_frame_change
    f = result["frechet"]
    result["ratio_last_to_first"] = f[-1] / f[0] if f[0] > 0 else float("inf")
    return result


def live_comparison(
    world: Any,
    spec: str,
    *,
    horizon: int,
    prompt: int,
    streams: int = 8,
    policy: str = "sticky",
    seed: int = 0,
    guidance: float | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """The real game (``ale:<GameId>``) and the world, started from the same real frames, receive the same actions
    from ``policy`` (which sees the real game); scored per horizon like the paired evaluation, over streams."""
    from worldplay.data.sources import make_source
    from worldplay.policies import make_policy

    sources = [make_source(spec, size=world.frame_shape[:2]) for _ in range(streams)]
    try:
        if tuple(sources[0].action_names) != tuple(world.action_names):
            raise WorldplayError(
                f"--env {spec}: its actions ({', '.join(sources[0].action_names)}) are not the world's "
                f"({', '.join(world.action_names)})"
            )
        policies = [make_policy(policy, world.action_names, fps=world.fps) for _ in range(streams)]
        L = prompt + horizon
        frames = np.zeros((streams, L, *world.frame_shape), np.uint8)
        actions = np.zeros((streams, L), np.int32)
        valid = np.ones((streams, L), bool)
        for i, (src, pol) in enumerate(zip(sources, policies, strict=True)):
            frames[i, 0] = src.reset(seed + i)
            pol.reset(seed + i)
        # the real games run ahead with the policy's actions; the world follows them below
        with tqdm(total=streams * (L - 1), unit="frame", desc=f"live {spec}", disable=not progress) as bar:
            for t in range(L - 1):
                for i, (src, pol) in enumerate(zip(sources, policies, strict=True)):
                    actions[i, t] = pol(frames[i, t]) if valid[i, t] else 0
                    if valid[i, t]:
                        frames[i, t + 1], _, terminated, truncated = src.step(int(actions[i, t]))
                        valid[i, t + 1] = not (terminated or truncated)
                    else:
                        valid[i, t + 1] = False
                    bar.update(1)
    finally:
        for src in sources:
            src.close()
    summaries, _ = paired_evaluation(
        world, frames, actions, np.arange(streams), prompt, seed=seed, guidance=guidance, progress=progress,
        valid_BH=valid[:, prompt:],
    )  # fmt: skip
    return summaries


def matched_events(pred: np.ndarray, real: np.ndarray, tolerance: int = 1) -> dict[str, float]:
    """Precision, recall and F1 of boolean event series [T] where a predicted event counts if a real one lies
    within ``tolerance`` frames (and a real one is found if a predicted one does); 1.0 where there is
    nothing to find and nothing was predicted. Also the counts."""
    pred, real = np.asarray(pred, bool), np.asarray(real, bool)
    k = 2 * tolerance + 1

    def near(x: np.ndarray) -> np.ndarray:  # True within `tolerance` frames of an event of x
        return np.convolve(x.astype(np.int32), np.ones(k, np.int32), mode="same") > 0

    return _event_scores(
        int(np.sum(pred & near(real))), int(pred.sum()), int(np.sum(real & near(pred))), int(real.sum())
    )


def _event_scores(hit_p: float, n_p: int, hit_r: float, n_r: int) -> dict[str, Any]:
    """Precision (``hit_p`` of ``n_p`` predicted events matched), recall (``hit_r`` of ``n_r`` real ones found) and
    F1; 1.0 where there is nothing to find and nothing was predicted."""
    precision = hit_p / n_p if n_p else 1.0 if not n_r else 0.0
    recall = hit_r / n_r if n_r else 1.0 if not n_p else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "predicted": n_p, "real": n_r}


def encode_frames(world: Any, frames: np.ndarray) -> np.ndarray:
    """uint8 frames [n, H, W, 3] -> the world's normalised latents [n, h, w, C], encoded a few hundred at a time."""
    return np.concatenate([np.asarray(world.encode(c)) for c in np.array_split(frames, max(1, len(frames) // 256))])


def one_step_predictions(
    world: Any, latents: list[np.ndarray], actions: list[np.ndarray], *, streams: int = 16, progress: bool = False
) -> list[np.ndarray]:
    """The world's one-step prediction of every frame of some episodes (``WorldModel.one_step_latents``): their
    normalised latents [T_i, h, w, C] and the actions taken at each frame [T_i] -> predictions [T_i, h, w, C],
    up to ``streams`` episodes at a time (episodes of similar length together; shorter ones padded)."""
    out: list[np.ndarray | None] = [None] * len(latents)
    lengths = np.array([len(z) for z in latents])
    order = np.argsort(lengths, kind="stable")
    bar = tqdm(total=int(lengths.sum()), desc="world predictions", unit="frame", disable=not progress)
    try:
        for g in range(0, len(order), streams):
            group = order[g : g + streams]
            n = lengths[group]
            T = int(n.max())
            z = np.stack(
                [np.concatenate([latents[i], np.repeat(latents[i][-1:], T - len(latents[i]), 0)]) for i in group]
            )
            a = np.stack([np.concatenate([actions[i], np.repeat(actions[i][-1:], T - len(actions[i]))]) for i in group])
            live = iter(np.sum(n[None, :] > np.arange(1, T)[:, None], axis=1))  # real frames made at each step

            def step_done(live=live) -> None:
                bar.update(int(next(live)))

            bar.update(len(group))  # the first frames are the real ones
            pred = world.one_step_latents(z, a, seed=g, on_step=step_done)
            for k, i in enumerate(group):
                out[i] = pred[k, : n[k]]
    finally:
        bar.close()
    return out  # type: ignore[return-value]


def reward_evaluation(
    world: Any,
    ds: Any,
    episodes: list[int],
    *,
    window: int = 300,
    tolerance: int = 1,
    world_frames: bool = False,
    progress: bool = False,
) -> dict[str, Any] | None:
    """The world's reward model on held-out real transitions (encoded real frames, recorded actions).

    For each transition j-1 -> j the model reads the latents of the frames up to j (as in the world: a stream's
    first frame fills the frames before it) and the action a[j-1]; its reward class is compared with the recorded
    reward r[j-1] and its end flag with the recorded terminal of frame j (the last frame of a game that ended);
    a lagged model's rewards are scored as a world reports them (:func:`_reward_scores`). With ``world_frames``
    the same scores are added under ``world_frames`` (``f1``, ``negative``, ``positive``, ``end``) with the
    model reading the world's own one-step predictions of those frames instead (each sampled
    from the real frames before it and the recorded action): how well it scores what the world generates.
    Reward events by sign, matched within ``tolerance`` frames: precision, recall and F1; ``f1`` is the mean of
    the two signs' F1 (a sign with no real and no predicted event counts as 1). Episode ends likewise, and the
    accuracy of the end flag per episode (did the world end it where the game did). Returns per window of
    ``window`` transitions and per episode: predicted against recorded, mean absolute error and correlation.
    None for a world without a reward model or a dataset without rewards.
    """
    if not world.has_reward or not ds.episodes_with("rewards", episodes):
        return None
    episodes = [e for e in episodes if ds.episode_lengths[e] >= 2]
    latents, actions, outcomes = [], [], []
    for e in episodes:  # every episode read and encoded once, for both scorings
        n = ds.episode_lengths[e]
        frames = ds.read_frames(e, 0, n)
        latents.append(encode_frames(world, frames))
        actions.append(ds.read_actions(e))
        outcomes.append(ds.read_outcomes(e))
    out = _reward_scores(world, latents, actions, outcomes, window, tolerance)
    if world_frames:
        predicted = one_step_predictions(world, latents, actions, progress=progress)
        on_world = _reward_scores(world, predicted, actions, outcomes, window, tolerance)
        out["world_frames"] = {k: on_world[k] for k in ("f1", "negative", "positive", "end")}
    return out


def _reward_scores(
    world: Any,
    latents: list[np.ndarray],
    actions: list[np.ndarray],
    outcomes: list[tuple[np.ndarray, np.ndarray]],
    window: int,
    tolerance: int,
) -> dict[str, Any]:
    """The reward model on each episode's latents [T, h, w, C] (see :func:`reward_evaluation`), its rewards as a
    world reports them: with a lag L, the reward of step j - 1 comes with frame j + L (so the last L steps of an
    episode have none), and an event is not reported again within the model's refractory steps."""
    F, lag = world.reward.frames, world.reward.lag
    pred_r, real_r, pred_end, real_end, ep_ok = [], [], [], [], []
    windows: dict[str, list[float]] = {"window_predicted": [], "window_real": [], "episode_predicted": [],
                                       "episode_real": []}  # fmt: skip
    for z, episode_actions, (rewards, terminals) in zip(latents, actions, outcomes, strict=True):
        n = len(z)
        padded = np.concatenate([np.repeat(z[:1], F - 1, axis=0), z])  # frame 0 fills the frames before it
        idx = np.arange(1, n)[:, None] + np.arange(F)[None, :]  # windows ending at frame j (j = 1..n-1)
        acts = episode_actions[np.maximum(np.arange(n - 1) - lag, 0)]  # a[j-1-L] made frame j - L
        chunks = [world.predict_reward(padded[idx[c : c + 512]], acts[c : c + 512]) for c in range(0, n - 1, 512)]
        r_hat, end_hat = np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
        r_hat = np.where(np.arange(n - 1) >= lag, r_hat, 0.0)  # before frame L + 1: no step of the episode's yet
        r_hat = reward_model.report_series(r_hat, world.reward.refractory)  # as reported: index j - 1, frame j
        r_true, end_true = rewards[: n - 1], terminals[1:]
        pred_r.append(r_hat)
        real_r.append(r_true)
        pred_end.append(end_hat)
        real_end.append(end_true)
        ep_ok.append(bool(end_hat.any()) == bool(end_true.any()) and (not end_true.any() or end_hat[-2:].any()))
        for w0 in range(0, n - 1 - window + 1, window):
            windows["window_predicted"].append(float(r_hat[w0 : w0 + window].sum()))
            windows["window_real"].append(float(r_true[w0 : w0 + window].sum()))
        windows["episode_predicted"].append(float(r_hat.sum()))
        windows["episode_real"].append(float(r_true.sum()))
    out: dict[str, Any] = {"transitions": int(sum(len(x) for x in real_r)), "tolerance_frames": tolerance}
    f1s = []
    for sign, test in (("negative", np.less), ("positive", np.greater)):
        scores = [matched_events(test(p, 0), test(r, 0), tolerance) for p, r in zip(pred_r, real_r, strict=True)]
        out[sign] = _pool_events(scores)
        f1s.append(out[sign]["f1"])
    out["f1"] = float(np.mean(f1s))
    ends = [matched_events(p, r, tolerance) for p, r in zip(pred_end, real_end, strict=True)]
    out["end"] = {**_pool_events(ends), "episode_accuracy": float(np.mean(ep_ok)) if ep_ok else None}
    for key, extra in (("return_per_window", {"window": window}), ("return_per_episode", {})):
        unit = key.rpartition("_")[2]
        wp, wr = np.asarray(windows[f"{unit}_predicted"]), np.asarray(windows[f"{unit}_real"])
        ok = len(wp) > 1 and wp.std() > 0 and wr.std() > 0
        out[key] = {
            **extra, "count": len(wr), "predicted": wp.tolist(), "real": wr.tolist(),
            "mean_abs_error": float(np.mean(np.abs(wp - wr))) if len(wr) else None,
            "correlation": float(np.corrcoef(wp, wr)[0, 1]) if ok else None,
        }  # fmt: skip
    return out


def _pool_events(scores: list[dict[str, float]]) -> dict[str, float]:
    """Per-episode event matches pooled: counts summed, precision and recall weighted by them."""
    hit_p = sum(s["precision"] * s["predicted"] for s in scores)
    hit_r = sum(s["recall"] * s["real"] for s in scores)
    return _event_scores(hit_p, sum(s["predicted"] for s in scores), hit_r, sum(s["real"] for s in scores))


def _select(summaries: dict[str, dict[str, Any]], idx: list[int]) -> dict[str, Any]:
    """Per-method summaries over horizons 1..H -> the metrics.json layout at the horizons ``idx`` (0-based):
    psnr/ssim (and their ci95) keyed by method, and delta_psnr (world minus random actions)."""
    out: dict[str, Any] = {}
    for key in ("psnr", "ssim", "psnr_ci95", "ssim_ci95"):
        out[key] = {m: [summaries[m][key][i] for i in idx] for m in METHODS}
    out["delta_psnr"] = [w - r for w, r in zip(out["psnr"]["world"], out["psnr"]["random_actions"], strict=True)]
    return out


def evaluate_world(
    world_path: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    horizons: tuple[int, ...] = DEFAULT_HORIZONS,
    prompt: int | None = None,
    windows_per_episode: int = 8,
    max_episodes: int | None = None,
    drift_minutes: float = 10.0,
    drift_streams: int = 4,
    env: str | None = None,
    env_streams: int = 8,
    env_policy: str = "sticky",
    guidance: float | None = None,
    sampling_steps: int | None = None,
    context_noise: float | None = None,
    seed: int = 0,
    idm: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``worldplay eval WORLD --dataset D --out DIR``: paired rollouts, baselines, delta-PSNR, drift, action
    following (with an IDM: ``idm``, or the world's own ``idm/``) and (with ``env``) the live game. Writes
    metrics.json, metrics.md, psnr.png and rollouts.mp4 into ``out``.
    ``guidance``, ``sampling_steps`` and ``context_noise`` replace the world's own sampler settings."""
    from worldplay.idm import idm_folder
    from worldplay.world import load_world

    horizons = tuple(sorted(set(int(h) for h in horizons)))
    if not horizons or horizons[0] < 1:
        raise WorldplayError(f"--horizons: need positive frame counts, got {list(horizons)}")
    world = load_world(world_path, sampling_steps=sampling_steps, context_noise=context_noise)
    prompt = min(8, world.config.window - 1) if prompt is None else prompt
    if not 1 <= prompt < world.config.window:
        raise WorldplayError(f"--prompt-frames: {prompt} not in [1, {world.config.window - 1}] (the world's window)")
    ds = open_dataset(dataset)
    if tuple(ds.action_names) != tuple(world.action_names) or tuple(ds.frame_shape) != world.frame_shape:
        raise WorldplayError(
            f"{ds.path}: its actions or frame shape ({len(ds.action_names)} actions, {list(ds.frame_shape)}) "
            f"are not the world's ({len(world.action_names)} actions, {list(world.frame_shape)})"
        )
    idm_path = idm if idm is not None else idm_folder(world_path)
    if idm is not None and idm_folder(idm) is None:
        raise WorldplayError(f"--idm {idm}: not an IDM folder (no part.json of kind 'idm'); see worldplay train idm")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    episodes, how = held_out_episodes(world, ds)
    episodes = episodes[:max_episodes] if max_episodes else episodes
    H = horizons[-1]
    frames, actions, group = episode_windows(ds, episodes, windows_per_episode, prompt + H, seed=seed)
    summaries, generated = paired_evaluation(
        world, frames, actions, group, prompt, seed=seed, guidance=guidance, progress=progress
    )
    idx = [h - 1 for h in horizons]
    lists = _select(summaries, idx)
    result: dict[str, Any] = {
        "world": str(world_path),
        "name": world.meta.get("name"),
        "dataset": {"path": str(ds.path), "fingerprint": ds.fingerprint()},
        "held_out": how,
        "episodes": len(np.unique(group)),
        "windows": len(group),
        "prompt_frames": prompt,
        "guidance": world.config.guidance if guidance is None else guidance,
        "sampling_steps": world.config.sampling_steps,
        "context_noise": world.config.context_noise_at_sampling,
        "seed": seed,
        "horizons": list(horizons),
        **lists,
        "drift": None,
    }
    if drift_minutes > 0:
        per_episode = [ds.read_frames(e, 0, ds.episode_lengths[e]) for e in episodes]  # read once, used twice
        held_frames = np.concatenate(per_episode)
        ref = latent_features(np.concatenate([np.asarray(world.encode(c)) for c in np.array_split(held_frames, 64)]))
        real_change = float(np.mean([np.mean(np.abs(np.diff(f.astype(np.int16), axis=0))) for f in per_episode]))
        starts = frames[np.arange(drift_streams) % len(frames)]
        start_acts = actions[np.arange(drift_streams) % len(frames)]
        result["drift"] = drift_evaluation(
            world, starts[:, :prompt], start_acts[:, : prompt - 1], ref, real_change,
            minutes=drift_minutes, seed=seed, guidance=guidance, progress=progress,
        )  # fmt: skip
        half = len(ref) // 2
        result["drift"]["real_frechet_floor"] = frechet_distance(ref[:half], ref[half:])
    # on the real frames and on what the world makes of the same transitions
    result["reward"] = reward_evaluation(world, ds, episodes, world_frames=True, progress=progress)
    result["action_following"] = None
    if idm_path is not None:
        from worldplay.idm import action_following, load_idm

        labeller = load_idm(idm_path)
        if labeller.action_names != tuple(world.action_names):
            raise WorldplayError(f"{labeller.path}: the IDM's actions are not the world's; use the world's own IDM")
        result["action_following"] = {
            "idm": str(labeller.path),
            **action_following(labeller, frames, generated["world"], actions, prompt),
        }
    if env:
        live = live_comparison(
            world, env, horizon=H, prompt=prompt, streams=env_streams, policy=env_policy, seed=seed,
            guidance=guidance, progress=progress,
        )  # fmt: skip
        result["env"] = {"game": env, "policy": env_policy, "streams": env_streams, **_select(live, idx)}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "metrics.md").write_text(markdown_report(result))
    plot_report(result, out / "psnr.png")
    try:
        side_by_side_video(frames, generated["world"], prompt, out / "rollouts.mp4", fps=world.fps)
    except (ImportError, OSError) as e:  # a video that cannot be written must not lose the metrics
        warnings.warn(f"{out / 'rollouts.mp4'}: video not written ({e})", stacklevel=1)
    return result


LABELS = {
    "world": "world (recorded actions)",
    "repeat_last": "repeat last frame",
    "random_actions": "world (random actions)",
}


def markdown_report(r: dict[str, Any]) -> str:
    """metrics.json as markdown tables: paired PSNR/SSIM per horizon, delta-PSNR, drift and the live game."""

    def table(m: dict[str, Any], title: str) -> list[str]:
        lines = [f"### {title}", "", "| horizon | " + " | ".join(f"PSNR {LABELS[k]}" for k in METHODS)
                 + " | delta-PSNR | " + " | ".join(f"SSIM {k}" for k in METHODS) + " |",
                 "|---:|" + "---:|" * (2 * len(METHODS) + 1)]  # fmt: skip
        for i, h in enumerate(r["horizons"]):
            cells = []
            for k in METHODS:
                lo, hi = m["psnr_ci95"][k][i]
                cells.append(f"{m['psnr'][k][i]:.2f} [{lo:.2f}, {hi:.2f}]")
            cells.append(f"{m['delta_psnr'][i]:+.2f}")
            cells += [f"{m['ssim'][k][i]:.3f}" for k in METHODS]
            lines.append(f"| {h} | " + " | ".join(cells) + " |")
        return [*lines, ""]

    out = [
        f"## Evaluation of {r['world']}",
        "",
        f"Dataset {r['dataset']['path']} ({r['held_out']}): {r['windows']} windows from {r['episodes']} episodes, "
        f"{r['prompt_frames']} real prompt frames, guidance {r['guidance']}, {r['sampling_steps']} sampling steps, "
        f"context noise {r['context_noise']:g}. PSNR in dB: mean over episodes and "
        "95% interval; delta-PSNR = world with the recorded actions minus world with uniformly random actions.",
        "",
        *table(r, "Paired rollouts on held-out episodes"),
    ]
    if r.get("env"):
        e = r["env"]
        out += table(e, f"Live game {e['game']} ({e['streams']} streams, policy {e['policy']})")
    rw = r.get("reward")
    if rw:
        out += [f"### Rewards and episode ends ({rw['transitions']} held-out real transitions, events matched within "
                f"{rw['tolerance_frames']} frame)", "", "| event | precision | recall | F1 | predicted | real |",
                "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        wf = rw.get("world_frames")
        for k in ("negative", "positive", "end"):
            for m, on in ((rw[k], "real frames"), (wf[k] if wf else None, "world's one-step frames")):
                if m is not None:
                    out.append(f"| {k}, {on} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                               f"{m['predicted']} | {m['real']} |")  # fmt: skip
        out += ["", f"Reward F1 (mean of the two signs): **{rw['f1']:.3f}** on the real frames"
                + (f", {wf['f1']:.3f} on the world's one-step predictions of them (each frame sampled from the "
                   "real frames before it and the recorded action)." if wf else ".")]  # fmt: skip
        for key, what in (("return_per_window", "window of {window} frames"), ("return_per_episode", "episode")):
            w = rw[key]
            if w["count"]:
                corr = "n/a" if w["correlation"] is None else f"{w['correlation']:.3f}"
                out.append(f"Return per {what.format(**w)} ({w['count']}): predicted against recorded, mean "
                           f"absolute error {w['mean_abs_error']:.2f}, correlation {corr}.")  # fmt: skip
        out.append("")
    af = r.get("action_following")
    if af:
        out += [f"### Action following (IDM {af['idm']}, {af['windows']} windows x {af['horizon']} frames)", "",
                "The IDM's accuracy on the world's rollouts against the commanded actions, and on the real frames "
                "of the same windows against the recorded actions.", "",
                "| frames | real | world |", "|---|---:|---:|",
                f"| all | {af['real_accuracy']:.3f} | {af['world_accuracy']:.3f} |"]  # fmt: skip
        out += [f"| horizon {k} | {v['real']:.3f} | {v['world']:.3f} |" for k, v in af["by_horizon"].items()]
        for g, v in af["by_group"].items():
            out.append(f"| {g} actions ({v['n']}) | {v['real']:.3f} | {v['world']:.3f} |")
            if "real_direction" in v:
                out.append(f"| {g} actions: direction | {v['real_direction']:.3f} | {v['world_direction']:.3f} |")
        out += ["", f"Action-following ratio (world / real): **{af['ratio']:.3f}**.", ""]
    d = r.get("drift")
    if d:
        out += [f"### Drift ({d['streams']} streams x {d['frames_per_stream']} frames, {d['policy']} policy)", "",
                "| minute | Fréchet distance | mean frame change |", "|---:|---:|---:|"]  # fmt: skip
        out += [f"| {m:g} | {f:.3f} | {c:.2f} |" for m, f, c in zip(d["minutes"], d["frechet"], d["frame_change"],
                                                                  strict=True)]  # fmt: skip
        out += [
            "",
            f"Real frames: Fréchet distance between two halves {d['real_frechet_floor']:.3f}, mean frame "
            f"change {d['real_frame_change']:.2f}. Last minute / first minute: {d['ratio_last_to_first']:.2f}.",
            "",
        ]
    return "\n".join(out)


def plot_report(r: dict[str, Any], path: Path) -> None:
    """PSNR and SSIM against horizon, the world beside its baselines (95% bands), and drift if measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if r.get("drift") else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    hs = r["horizons"]
    for ax, key in zip(axes[:2], ("psnr", "ssim"), strict=True):
        for k in METHODS:
            ax.plot(hs, r[key][k], marker="o", label=LABELS[k])
            lo, hi = np.asarray(r[f"{key}_ci95"][k]).T
            ax.fill_between(hs, lo, hi, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(hs, [str(h) for h in hs])
        ax.set_xlabel("horizon (frames)")
        ax.set_ylabel("PSNR (dB)" if key == "psnr" else "SSIM")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[0].set_title(f"{r.get('name') or Path(r['world']).name}: paired rollouts, {r['windows']} windows")
    if r.get("drift"):
        d = r["drift"]
        axes[2].plot(d["minutes"], d["frechet"], marker="o", label="generated vs real")
        axes[2].axhline(d["real_frechet_floor"], color="grey", ls="--", label="real vs real")
        axes[2].set_xlabel("minute of generation")
        axes[2].set_ylabel("Fréchet distance (autoencoder features)")
        axes[2].set_title("drift")
        axes[2].legend()
        axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def side_by_side_video(
    frames: np.ndarray, generated: np.ndarray, prompt: int, path: Path, *, fps: float, streams: int = 4
) -> Path:
    """MP4 of a few windows, one per row: real | world | difference. The prompt frames are real in both."""
    from worldplay.video import write_video

    n = min(streams, len(frames))
    real = frames[:n]
    world = np.concatenate([frames[:n, :prompt], generated[:n]], axis=1)
    diff = np.clip(2 * np.abs(real.astype(np.int16) - world.astype(np.int16)), 0, 255).astype(np.uint8)
    rows = np.concatenate([real, world, diff], axis=3)  # [n, L, H, 3W, 3]
    video = np.concatenate(list(rows), axis=2)  # [L, n*H, 3W, 3]
    return write_video(path, video, fps=fps, scale=3)


# ---------------------------------------------------------------------------
# Agent rollouts in a world (``worldplay rollout``)
# ---------------------------------------------------------------------------


def record_rollouts(
    world: Any,
    policy: str,
    out: str | os.PathLike[str],
    *,
    episodes: int,
    steps: int,
    batch: int = 8,
    seed: int = 0,
    guidance: float | None = None,
    prompt: np.ndarray | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Roll ``episodes`` episodes of ``steps`` generated frames out of ``world``, ``batch`` streams at a time,
    each driven by its own ``policy`` (random, sticky, human or ``pkg.module:function``) that sees the world's
    frames. Writes ``out/dataset`` (a worldplay dataset: the prompt frames, then the generated ones, with every
    action and the world's predicted rewards and episode ends), ``out/videos/<episode>.mp4`` and
    ``out/summary.json`` (with each episode's return, and its expected return where the world has a rate model);
    returns the summary.

    An episode ends after ``steps`` frames or when the world predicts its end (worlds with a reward model).

    Each stream starts from one of the world's held-out prompts (chosen by ``seed``) or from ``prompt``
    (frames [P, H, W, 3]). Episodes are written one by one, atomically, as their batch finishes.
    """
    import datetime
    import time

    from worldplay.data.format import DatasetWriter, write_json_atomic
    from worldplay.policies import make_policy
    from worldplay.video import write_video

    if episodes < 1 or steps < 1 or batch < 1:
        raise WorldplayError(
            f"rollout: --episodes, --steps and --batch must be >= 1 (got {episodes}, {steps}, {batch})"
        )
    if policy == "human" and batch != 1:
        raise WorldplayError("rollout: --policy human plays one stream at a time; use --batch 1")
    if prompt is None and world.prompts is None:
        raise WorldplayError("rollout: this world ships no prompts; pass --prompt IMAGE")
    out = Path(out)
    writer = DatasetWriter.create(
        out / "dataset", frame_shape=world.frame_shape, action_names=world.action_names, fps=world.fps
    )
    rng = np.random.default_rng([seed, 4])
    lag = world.reward.lag if world.has_reward else 0  # steps late that the world reports a reward
    rate = world.has_rate  # then each episode's expected return too (the rate model, docs/agents.md)
    policies = [make_policy(policy, world.action_names, fps=world.fps) for _ in range(min(batch, episodes))]
    records: list[dict[str, Any]] = []
    t_gen, timed = 0.0, 0  # generation time and frames, leaving out each batch's first step (it may compile)
    with tqdm(total=episodes * steps, unit="frame", desc=f"rollout {out}", disable=not progress) as bar:
        for first in range(0, episodes, batch):
            B = min(batch, episodes - first)
            if prompt is not None:
                p_frames = np.broadcast_to(prompt, (B, *prompt.shape))
                p_acts = None
                picks = [None] * B
            else:
                picks = [int(i) for i in rng.integers(0, len(world.prompts[0]), B)]
                p_frames, p_acts = world.held_out_prompt(np.asarray(picks))
            P = p_frames.shape[1]
            state = world.start(np.ascontiguousarray(p_frames), p_acts, seed=seed + first)
            for i in range(B):
                policies[i].reset(seed + first + i)
            frame = p_frames[:, -1]
            gen = np.zeros((B, steps, *world.frame_shape), np.uint8)
            acts = np.zeros((B, steps + 1), np.int32)
            rewards = np.zeros((B, steps + 1), np.float32)  # rewards[:, t]: of the action acts[:, t]
            ended = np.zeros((B, steps + 1), bool)  # ended[:, t]: the world ended the episode at frame t
            length = np.full(B, steps, np.int64)  # generated frames of each stream's episode
            if rate:  # the world's own latents of every frame, for the rate model
                lat = np.zeros((B, P + steps, *world.latent_shape), np.float32)
                lat[:, :P] = np.asarray(world.encode(p_frames.reshape(-1, *world.frame_shape))).reshape(
                    B, P, *world.latent_shape
                )
            for t in range(steps + 1):
                acts[:, t] = [policies[i](frame[i]) if t <= length[i] else 0 for i in range(B)]
                if t >= length.max():
                    break  # the action chosen at the last frame is recorded, like `worldplay record` does
                t0 = time.perf_counter()
                if rate:
                    state, *outs = world.step_latent_with_reward(state, acts[:, t], guidance)
                    frame, z, r, end = (np.asarray(x) for x in outs)
                    lat[:, P + t] = z
                else:
                    state, frame, r, end = world.step_with_reward(state, acts[:, t], guidance)
                if t > 0:
                    t_gen += time.perf_counter() - t0
                    timed += B
                gen[:, t] = frame
                live = t < length
                rewards[live, t] = r[live]
                ended[live, t + 1] = end[live]
                length = np.where(live & end, t + 1, length)  # the world showed the episode's last frame
                bar.update(int(live.sum()))
            bar.total -= int(B * steps - length.sum())  # episodes the world ended early: frames never made
            bar.refresh()
            if rate:  # each episode's expected return, its generated steps only
                known = np.zeros((B, P - 1), np.int32) if p_acts is None else np.asarray(p_acts, np.int32)
                taken = np.concatenate([known, acts], axis=1)[:, : P + steps]  # the action taken on each frame
                expected = world.expected_returns(lat, taken, P, length)
            for i in range(B):
                prompt_acts = (
                    np.asarray(p_acts[i], np.int32)
                    if p_acts is not None
                    else np.full(P - 1, 0, np.int32)  # a given prompt has no recorded actions: NOOP
                )
                n = int(length[i])
                frames_i = np.concatenate([p_frames[i], gen[i, :n]])
                actions_i = np.concatenate([prompt_acts, acts[i, : n + 1]])
                # rewards[k] and terminals[k] are the outcome of actions[k]: the prompt's are not known (0), the
                # generated ones are the world's; the last frame's action ends the game if the world said so
                # (a reward model with a lag reports the reward of step t at step t + lag: moved back to step t)
                generated = np.concatenate([rewards[i, lag : n + 1], np.zeros(lag, np.float32)])
                rewards_i = np.concatenate([np.zeros(P - 1, np.float32), generated])
                terminals_i = np.zeros(len(actions_i), bool)
                terminals_i[-1] = ended[i, n]
                meta = {
                    "source": f"world:{world.meta.get('name', '?')}",
                    "world_steps": world.meta.get("steps"),
                    "policy": policies[i].name,
                    "seed": seed + first + i,
                    "guidance": world.config.guidance if guidance is None else guidance,
                    "prompt_frames": P,
                    "prompt_index": picks[i],
                    "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                }
                path = writer.write_episode(
                    frames_i, actions_i, rewards=rewards_i if world.has_reward else None,
                    terminals=terminals_i if world.has_reward else None, meta=meta,
                )  # fmt: skip
                video = out / "videos" / f"{path.stem}.mp4"
                try:
                    write_video(video, frames_i, fps=world.fps, scale=4)
                except (ImportError, OSError) as e:  # a video that cannot be written must not lose the episode
                    warnings.warn(f"{video}: video not written ({e})", stacklevel=1)
                    video = None
                counts = np.bincount(acts[i, :steps], minlength=len(world.action_names))
                records.append({
                    "episode": path.stem,
                    "video": None if video is None else str(video.relative_to(out)),
                    "prompt_index": picks[i],
                    "seed": seed + first + i,
                    "frames": len(frames_i),
                    "generated_frames": n,
                    "return": float(rewards[i, :n].sum()) if world.has_reward else None,
                    "expected_return": float(expected[i]) if rate else None,
                    "ended": bool(ended[i, n]) if world.has_reward else False,
                    "actions": {n: int(c) for n, c in zip(world.action_names, counts, strict=True) if c},
                    "mean_frame_change": float(np.mean(np.abs(np.diff(frames_i[P - 1 :].astype(np.int16), axis=0)))),
                })  # fmt: skip
    run = {
        "world": world.meta.get("name", "?"),
        "policy": policy,
        "episodes": len(records),
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "guidance": world.config.guidance if guidance is None else guidance,
        "generated_frames_per_s": timed / t_gen if t_gen > 0 else None,
        "rewards": "world" if world.has_reward else None,  # None: the world has no reward model (returns are null)
    }
    if world.has_reward:
        returns = [r["return"] for r in records]
        run["mean_return"] = float(np.mean(returns))
    if rate:
        run["mean_expected_return"] = float(np.mean([r["expected_return"] for r in records]))
    # a second rollout into the same folder appends to its dataset, so the summary keeps every run's episodes
    previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    runs = [*previous.get("runs", []), run]
    episode_list = [*previous.get("episode_list", []), *records]
    summary = {**run, "dataset": "dataset", "runs": runs, "total_episodes": len(episode_list)}
    summary["episode_list"] = episode_list
    write_json_atomic(out / "summary.json", summary)
    return summary
