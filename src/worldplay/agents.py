"""Rank agents inside a world, and check the ranking against the real game: ``worldplay eval-agents``.

    result = evaluate_agents(world, ["random", "worldplay.policies.boxing:chase"], env="ale:Boxing",
                             starts=16, steps=300, out="eval/agents")

Each policy plays from the same N start states, for T frames, in the world and (with ``env``) in the
real game. A start is a real game reset with its own seed (held out: far from the seeds ``worldplay
record`` uses by default), advanced by a few frames of a fixed sticky policy; the world starts from
those real frames and the actions between them. The real game replays the same seed and actions to
the same state, so every policy meets exactly the same start in both. Without ``env`` the starts are
the world's own held-out prompts and only the world plays: ranking agents with no game at hand.

A policy sees the frames of where it plays (the world's frames in the world). An episode's return is
the sum of its rewards until it ends (the game's end, or the world's predicted end) or T frames.
Across policies: Pearson r and Spearman rho of the mean returns, MMRV (mean maximum rank violation,
returns normalised by the real range; SIMPLER, Li et al. 2024) and each policy's return error.

A world with a rate model is scored by its expected rewards by default (``score="rate"``), read from rollouts
sampled with the rate model's own denoising steps and guidance (``rate.sampling_steps``, ``rate.guidance``, set
where they were chosen; see :func:`reading`); other worlds by their reward model's predicted points
(``score="events"``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldplay.errors import WorldplayError
from worldplay.metrics import mean_ci95

START_SEED = 1_000_000  # seeds of the real starts: far from `worldplay record`'s defaults (1, 100000)
WARMUP_POLICY = "sticky"  # the fixed policy that leads a real game from its reset to a start state


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (nan when either side is constant)."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson's of the ranks."""
    return pearson(_ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64)))


def mmrv(world: Sequence[float], real: Sequence[float]) -> float:
    """Mean maximum rank violation: for each policy, the largest real-return gap (normalised by the real range)
    to another policy that the world orders the other way round; averaged over policies. 0 is a perfect
    ranking; ties in the world count as a violation of a real difference."""
    w, r = np.asarray(world, np.float64), np.asarray(real, np.float64)
    span = r.max() - r.min()
    if len(r) < 2 or span <= 0:
        return 0.0
    rn = r / span
    worst = []
    for i in range(len(r)):
        violated = [(w[i] < w[j]) != (r[i] < r[j]) or (w[i] == w[j] and r[i] != r[j]) for j in range(len(r))]
        worst.append(max((abs(rn[i] - rn[j]) for j in range(len(r)) if violated[j]), default=0.0))
    return float(np.mean(worst))


def real_starts(spec: str, frame_size: tuple[int, int], starts: int, prompt: int, seed: int) -> dict[str, Any]:
    """N start states of the real game: each a reset (seed ``START_SEED + seed + k``) and ``prompt - 1`` actions of
    the warm-up policy -> {"seeds", "frames" [N, P, H, W, 3], "actions" [N, P - 1]}."""
    from worldplay.data.sources import make_source
    from worldplay.policies import make_policy

    src = make_source(spec, size=frame_size)
    try:
        pol = make_policy(WARMUP_POLICY, src.action_names)
        seeds = [START_SEED + seed + k for k in range(starts)]
        frames = np.zeros((starts, prompt, *src.frame_shape), np.uint8)
        actions = np.zeros((starts, prompt - 1), np.int32)
        for k, s in enumerate(seeds):
            frames[k, 0] = src.reset(s)
            pol.reset(s)
            for t in range(prompt - 1):
                actions[k, t] = pol(frames[k, t])
                frames[k, t + 1], _, terminated, truncated = src.step(int(actions[k, t]))
                if terminated or truncated:
                    raise WorldplayError(f"--env {spec}: the game ended during the {prompt}-frame start {k}")
        return {"seeds": seeds, "frames": frames, "actions": actions, "action_names": tuple(src.action_names)}
    finally:
        src.close()


def play_real(spec: str, policy: str, starts: dict[str, Any], steps: int, progress: bool = True) -> np.ndarray:
    """Return [N] of ``policy`` in the real game from each start (reset with its seed, replay its actions)."""
    from worldplay.data.sources import make_source
    from worldplay.policies import make_policy

    frame_size = starts["frames"].shape[2:4]
    src = make_source(spec, size=frame_size)
    returns = np.zeros(len(starts["seeds"]))
    try:
        pol = make_policy(policy, starts["action_names"])
        for k, s in enumerate(tqdm(starts["seeds"], desc=f"real {policy}", unit="start", disable=not progress)):
            frame = src.reset(s)
            for a in starts["actions"][k]:
                frame, _, _, _ = src.step(int(a))
            if not np.array_equal(frame, starts["frames"][k, -1]):
                raise WorldplayError(f"--env {spec}: replaying start {k} did not reach the same frame")
            pol.reset(s)
            for _ in range(steps):
                frame, reward, terminated, truncated = src.step(pol(frame))
                returns[k] += reward
                if terminated or truncated:
                    break
    finally:
        src.close()
    return returns


def play_world(
    world: Any,
    policy: str,
    frames: np.ndarray,
    actions: np.ndarray | None,
    steps: int,
    *,
    seeds: Sequence[int],
    batch: int = 16,
    guidance: float | None = None,
    score: str = "events",
    progress: bool = True,
) -> np.ndarray:
    """Return [N] of ``policy`` in the world from start frames [N, P, H, W, 3] (and actions [N, P - 1]; None:
    NOOP), ``batch`` starts at a time; the world's predicted rewards of its steps until its predicted end or
    ``steps`` frames. A reward model with a lag L reports a step's reward L steps later, so each stream plays L
    steps more to report the rewards of its last L steps (the rewards of those extra steps are not counted).

    ``score="rate"`` counts the rate model's expected reward of each step instead of the reported events
    (:meth:`WorldModel.expected_rewards`, over the prompt's and the generated frames' latents); episode ends
    still come from the reward model, where there is one."""
    from worldplay.policies import make_policy

    N = len(frames)
    lag = world.reward.lag if world.has_reward else 0
    returns = np.zeros(N)
    rate = score == "rate"
    bar = tqdm(total=N * steps, desc=f"world {policy}", unit="frame", disable=not progress)
    for first in range(0, N, batch):
        idx = np.arange(first, min(first + batch, N))
        pols = [make_policy(policy, world.action_names, fps=world.fps) for _ in idx]
        for p, k in zip(pols, idx, strict=True):
            p.reset(int(seeds[k]))
        prompt_actions = None if actions is None else actions[idx]
        state = world.start(frames[idx], prompt_actions, seed=int(seeds[first]))
        frame = frames[idx, -1]
        live = np.ones(len(idx), bool)  # the episode goes on (no end predicted, fewer than `steps` steps)
        counted = np.full(len(idx), steps + lag)  # rewards reported before this step are the episode's
        if rate:  # every frame's latents and the action taken on it, the prompt's first
            P = frames.shape[1]
            # no action recorded between the prompt frames: NOOP (index 0), as rollouts and the environments read it
            past = np.zeros((len(idx), P - 1), np.int64) if prompt_actions is None else np.asarray(prompt_actions)
            latents = [np.asarray(world.encode(frames[idx].reshape(-1, *frames.shape[2:]))).reshape(len(idx), P, -1)]
            taken = [past]
        for t in range(steps + lag):
            acts = np.array([p(f) if t < n else 0 for p, f, n in zip(pols, frame, counted, strict=True)], np.int64)
            if rate:
                state, frame, z, reward, end = world.step_latent_with_reward(state, acts, guidance)
                frame, end = np.asarray(frame), np.asarray(end)
                latents.append(np.asarray(z).reshape(len(idx), 1, -1))
                taken.append(acts[:, None])
            else:
                state, frame, reward, end = world.step_with_reward(state, acts, guidance)
                returns[idx] += np.where(t < counted, reward, 0.0)
            ended = live & np.asarray(end, bool)
            counted = np.where(ended, t + 1 + lag, counted)
            live &= ~ended & (t + 1 < steps)
            bar.update(len(idx) if t < steps else 0)
            if not np.any(t + 1 < counted):
                break
        if rate:
            z = np.concatenate(latents, axis=1).reshape(len(idx), -1, *world.latent_shape)
            a = np.concatenate([*taken, np.zeros((len(idx), 1), np.int64)], axis=1)[:, : z.shape[1]]
            last = np.where(counted < steps + lag, counted - lag, steps)  # the steps up to a predicted end
            returns[idx] += world.expected_returns(z, a, P, last)
    bar.close()
    return returns


def default_score(has_rate: bool) -> str:
    """What ``eval-agents`` scores a world by when not told: the rate model's expected rewards where the world
    carries one, else the reward model's predicted points."""
    return "rate" if has_rate else "events"


def reading(
    path: str | os.PathLike[str],
    score: str | None = None,
    sampling_steps: int | None = None,
    guidance: float | None = None,
) -> tuple[str, int | None, float | None]:
    """How ``eval-agents`` reads the world folder at ``path``: (score, denoising steps per frame to load it with,
    guidance scale to play it with).

    ``score`` None: ``"rate"`` when the world carries a rate model, else ``"events"``. ``sampling_steps`` and
    ``guidance`` None with the rate score: the rate model's own (``rate.sampling_steps`` and ``rate.guidance`` in
    world.json) where it sets them, else None (the world's own sampler). Given values are returned as they are."""
    from worldplay.checkpoint import read_world_meta
    from worldplay.world import has_part

    meta = read_world_meta(path)
    has_rate = has_part(path, meta, "rate")
    score = default_score(has_rate) if score is None else score
    if score == "rate" and has_rate:
        own = meta["rate"].get("config", {})
        if sampling_steps is None:
            sampling_steps = int(own.get("sampling_steps", 0)) or None
        if guidance is None:
            guidance = float(own.get("guidance", 0.0)) or None
    return score, sampling_steps, guidance


def evaluate_agents(
    world: Any,
    policies: Sequence[str],
    *,
    env: str | None = None,
    starts: int = 16,
    steps: int = 300,
    prompt: int = 4,
    batch: int = 16,
    seed: int = 0,
    guidance: float | None = None,
    score: str | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Returns of every policy in the world (and the real game with ``env``), and how well the world ranks them.

    ``score``: ``"events"`` (the reward model's predicted points), ``"rate"`` (the rate model's expected rewards)
    or None: rate when the world has a rate model, else events. The world plays with the sampler it was loaded
    with, at ``guidance`` (None: the world's own); :func:`reading` gives the steps and guidance the rate model was
    chosen with.

    Writes ``out/metrics.json``, ``out/metrics.md`` and, with ``env``, ``out/returns.png`` (see the module
    docstring); returns the metrics.
    """
    if not policies:
        raise WorldplayError("eval-agents: give at least one policy (--policies random,sticky,...)")
    if starts < 1 or steps < 1 or prompt < 1:
        raise WorldplayError(f"eval-agents: --starts, --steps and prompt frames must be >= 1 ({starts}, {steps})")
    score = default_score(world.has_rate) if score is None else score
    if score not in ("events", "rate"):
        raise WorldplayError(f"eval-agents: --score must be events or rate, got {score!r}")
    if score == "rate" and not world.has_rate:
        raise WorldplayError(
            f"world {world.meta.get('name', '?')!r} has no rate model, so --score rate has nothing to score with; "
            "add one: worldplay train rate --config C --world FOLDER, or score with --score events"
        )
    if score == "events" and not world.has_reward:
        raise WorldplayError(
            f"world {world.meta.get('name', '?')!r} has no reward model, so every return would be 0; add one: "
            "worldplay train reward --config C --world FOLDER"
        )
    from worldplay.policies import make_policy

    for p in policies:  # every policy built once before any plays: a wrong name fails now, not after minutes
        make_policy(p, world.action_names, fps=world.fps)
    t0 = time.perf_counter()
    if env is not None:
        start = real_starts(env, world.frame_shape[:2], starts, prompt, seed)
        if start["action_names"] != tuple(world.action_names):
            raise WorldplayError(
                f"--env {env}: its actions ({', '.join(start['action_names'])}) are not the world's "
                f"({', '.join(world.action_names)})"
            )
        frames, actions, seeds = start["frames"], start["actions"], start["seeds"]
    else:
        if world.prompts is None:
            raise WorldplayError("eval-agents: this world ships no prompts; give --env to start from the real game")
        picks = np.random.default_rng([seed, 7]).integers(0, len(world.prompts[0]), starts)
        frames, actions = world.held_out_prompt(picks)
        seeds = [START_SEED + seed + k for k in range(starts)]
    rows: dict[str, dict[str, Any]] = {}
    for p in policies:
        w = play_world(
            world, p, frames, actions, steps, seeds=seeds, batch=batch, guidance=guidance, score=score,
            progress=progress,
        )  # fmt: skip
        rows[p] = {"world_returns": w.tolist(), "world": mean_ci95(w)}
        if env is not None:
            r = play_real(env, p, start, steps, progress=progress)
            rows[p].update(real_returns=r.tolist(), real=mean_ci95(r))
    result: dict[str, Any] = {
        "world_name": world.meta.get("name", "?"),
        "env": env,
        "starts": starts,
        "steps": steps,
        "seed": seed,
        "score": score,
        "sampling_steps": world.config.sampling_steps,
        "guidance": world.config.guidance if guidance is None else float(guidance),
        "policies": list(policies),
        "world_return": [rows[p]["world"][0] for p in policies],
        "world_ci95": [rows[p]["world"][1] for p in policies],
    }
    if env is not None:
        wr, rr = np.array(result["world_return"]), np.array([rows[p]["real"][0] for p in policies])
        span = float(rr.max() - rr.min())
        result.update(
            real_return=rr.tolist(),
            real_ci95=[rows[p]["real"][1] for p in policies],
            pearson=pearson(wr, rr),
            spearman=spearman(wr, rr),
            mmrv=mmrv(wr, rr),
            real_range=span,
            return_error=(np.abs(wr - rr) / span if span > 0 else np.abs(wr - rr)).tolist(),
        )
    result["per_start"] = {p: {k: v for k, v in rows[p].items() if k.endswith("_returns")} for p in policies}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        (out / "metrics.md").write_text(markdown(result))
        if env is not None:
            plot_returns(result, out / "returns.png")
    return result


def markdown(r: dict[str, Any]) -> str:
    """The metrics as a Markdown report."""
    real = r.get("real_return") is not None
    lines = [
        f"# Agents in world `{r['world_name']}`" + (f" and in `{r['env']}`" if real else ""),
        "",
        f"{r['starts']} starts x {r['steps']} frames per policy (seed {r['seed']}); mean return with its 95% interval; "
        + _score_words(r),
        "",
        "| policy | world return |" + (" real return | error (of the real range) |" if real else ""),
        "|---|---:|" + ("---:|---:|" if real else ""),
    ]
    for i, p in enumerate(r["policies"]):
        row = f"| `{p}` | {r['world_return'][i]:.2f} ± {r['world_ci95'][i]:.2f} |"
        if real:
            row += f" {r['real_return'][i]:.2f} ± {r['real_ci95'][i]:.2f} | {r['return_error'][i]:.2f} |"
        lines.append(row)
    if real:
        lines += [
            "",
            f"Pearson r {r['pearson']:.3f}, Spearman rho {r['spearman']:.3f}, MMRV {r['mmrv']:.3f} "
            f"(real range {r['real_range']:.2f}).",
        ]
    lines += ["", f"{r['seconds']:.0f} s in all."]
    return "\n".join(lines) + "\n"


def _score_words(r: dict[str, Any]) -> str:
    """How the world's returns were read, in words (results from before the keys existed: the reward model's)."""
    what = "the rate model's expected rewards" if r.get("score") == "rate" else "the reward model's predicted points"
    steps, guidance = r.get("sampling_steps"), r.get("guidance")
    sampler = (f", {steps} denoising steps per frame" if steps else "") + (
        f", guidance {guidance:g}" if guidance is not None else ""
    )
    return f"world returns from {what}{sampler}."


def plot_returns(r: dict[str, Any], path: Path) -> None:
    """Scatter of world against real mean return per policy, with 95% intervals and the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.errorbar(r["real_return"], r["world_return"], xerr=r["real_ci95"], yerr=r["world_ci95"], fmt="o", capsize=3)
    for p, x, y in zip(r["policies"], r["real_return"], r["world_return"], strict=True):
        ax.annotate(p.rpartition(":")[2], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    lo = min(min(r["real_return"]), min(r["world_return"]))
    hi = max(max(r["real_return"]), max(r["world_return"]))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("real game: mean return")
    ax.set_ylabel("world: mean return")
    ax.set_title(f"Spearman {r['spearman']:.2f}, Pearson {r['pearson']:.2f}, MMRV {r['mmrv']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
