"""Benchmarks behind ``worldplay bench``: measured here, on this machine, never in a test."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from worldplay.data.format import open_dataset
from worldplay.data.loader import make_loader
from worldplay.data.record import play_episode, record
from worldplay.data.sources import make_source
from worldplay.policies import StickyPolicy


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import jax

    dev = jax.devices()[0]
    device = "cpu" if dev.platform == "cpu" else f"{dev.platform}: {dev.device_kind}"
    return {"device": device, "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def _recording_fps(source_spec: str, frames: int, seed: int = 0) -> float:
    source = make_source(source_spec)
    policy = StickyPolicy(len(source.action_names))
    try:
        play_episode(source, policy, seed=seed, steps=32)  # warm up
        t0 = time.perf_counter()
        done, ep = 0, 0
        while done < frames:
            f, *_ = play_episode(source, policy, seed=seed + ep, steps=frames - done)
            done += len(f)
            ep += 1
        return done / (time.perf_counter() - t0)
    finally:
        source.close()


def bench_data(
    *,
    batch_size: int = 32,
    window: int = 16,
    batches: int = 200,
    record_frames: int = 5000,
    ale_game: str | None = "ale:Boxing",
    num_threads: int = 2,
) -> dict[str, Any]:
    """Recording frames/s per source and loader batches/s for B x T 64x64 windows."""
    result: dict[str, Any] = {"benchmark": "data", **machine(), "recording_fps": {}}
    result["recording_fps"]["toy"] = _recording_fps("toy", record_frames)
    if ale_game:
        result["recording_fps"][ale_game] = _recording_fps(ale_game, record_frames // 5)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "toy"
        source = make_source("toy")
        t0 = time.perf_counter()
        record(source, StickyPolicy(5), out, episodes=20, steps=500, progress=False)
        result["record_and_write_fps"] = 10_000 / (time.perf_counter() - t0)
        ds = open_dataset(out)
        loader = make_loader(
            ds, window=window, batch_size=batch_size, seed=0, shard_index=0, shard_count=1, num_threads=num_threads
        )
        it = iter(loader)
        for _ in range(5):
            next(it)
        times = []
        t_all = time.perf_counter()
        for _ in range(batches):
            t = time.perf_counter()
            next(it)
            times.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t_all
    result["loader"] = {
        "batch_size": batch_size,
        "window": window,
        "frame_shape": [64, 64, 3],
        "num_threads": num_threads,
        "batches_per_s": batches / elapsed,
        "frames_per_s": batches * batch_size * window / elapsed,
        "ms_p50": 1000 * statistics.median(times),
        "ms_p95": 1000 * sorted(times)[int(0.95 * len(times)) - 1],
    }
    return result


def format_data(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['cpu']} ({result['cores']} cores)"]
    for src, fps in result["recording_fps"].items():
        lines.append(f"recording {src:>12}: {fps:10.0f} frames/s")
    lines.append(f"record + write toy    : {result['record_and_write_fps']:10.0f} frames/s")
    ld = result["loader"]
    lines.append(
        f"loader B={ld['batch_size']} T={ld['window']} 64x64: {ld['batches_per_s']:.1f} batches/s "
        f"({ld['frames_per_s']:.0f} frames/s, p50 {ld['ms_p50']:.1f} ms, p95 {ld['ms_p95']:.1f} ms)"
    )
    return "\n".join(lines)


def _timed(fn, iters: int) -> dict[str, float]:
    for _ in range(10):  # compile and warm up
        jax.block_until_ready(fn())
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(1000 * (time.perf_counter() - t))
    times.sort()
    return {"ms_p50": statistics.median(times), "ms_p95": times[int(0.95 * len(times)) - 1]}


def bench_autoencoder(config: str | os.PathLike[str] | None = None, *, iters: int = 300) -> dict[str, Any]:
    """Milliseconds to encode, decode, and encode + decode one frame (batch 1), jitted, weights random."""
    from flax import nnx

    from worldplay.config import AutoencoderConfig, load_config
    from worldplay.models.autoencoder import Autoencoder

    cfg = load_config(config).autoencoder if config else AutoencoderConfig()
    graphdef, params = nnx.split(Autoencoder(cfg, rngs=nnx.Rngs(0)))
    encode = jax.jit(lambda p, f: nnx.merge(graphdef, p).encode(f))
    decode = jax.jit(lambda p, z: nnx.merge(graphdef, p).decode(z))
    both = jax.jit(lambda p, f: nnx.merge(graphdef, p).decode(nnx.merge(graphdef, p).encode(f)))
    s = cfg.frame_size
    frame = jnp.asarray(np.random.default_rng(0).integers(0, 256, (1, s, s, 3), dtype=np.uint8))
    z = encode(params, frame)
    return {
        "benchmark": "autoencoder",
        **machine(),
        "config": str(config) if config else "default",
        "frame_shape": [s, s, 3],
        "latent_shape": list(cfg.latent_shape),
        "encode": _timed(lambda: encode(params, frame), iters),
        "decode": _timed(lambda: decode(params, z), iters),
        "encode_decode": _timed(lambda: both(params, frame), iters),
    }


def format_autoencoder(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['cpu']} ({result['cores']} cores), device {result['device']}"]
    for k in ("encode", "decode", "encode_decode"):
        r = result[k]
        lines.append(f"{k:>14}: p50 {r['ms_p50']:.2f} ms, p95 {r['ms_p95']:.2f} ms per frame")
    return "\n".join(lines)


def _flops(jitted: Any, *args: Any) -> float | None:
    """FLOPs of ``jitted(*args)`` by XLA's cost analysis of its HLO, lowered for the CPU whatever the backend.

    The count belongs to the program, not to the machine, but on a GPU XLA's cost analysis reports nothing for
    a lowered function and, after compiling, no longer counts the matrix products it hands to cuBLAS (a quarter
    of the training step's FLOPs on an H100). So the program is lowered for the host CPU: first by committing
    the arguments to it, else by asking for a CPU lowering of their shapes.
    """

    def count(lowered: Any) -> float | None:
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost["flops"]) if cost and "flops" in cost else None

    try:
        cpu = jax.devices("cpu")[0]
        return count(jitted.lower(*jax.device_put(args, cpu)))
    except Exception:  # cost analysis is best-effort
        pass
    try:
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
        return count(jitted.trace(*shapes).lower(lowering_platforms=("cpu",)))
    except Exception:
        return None


def _percentiles(times_ms: list[float]) -> dict[str, float]:
    t = sorted(times_ms)
    return {"ms_p50": statistics.median(t), "ms_p95": t[max(0, int(0.95 * len(t)) - 1)], "ms_mean": statistics.fmean(t)}


def bench_play(
    world_path: str | os.PathLike[str] | None = None,
    *,
    frames: int = 300,
    scale: int = 8,
    sampling_steps: int | None = None,
    context_noise: float | None = None,
) -> dict[str, Any]:
    """Frames per second of a world stepped with guidance on, split into model, decode and display; and the
    seconds from opening the world to its first frame (``first_frame_s``: load, start, compile, one step).

    total: one ``world.step`` (denoising steps with CFG, cache update, decode, copy to the host), as play
    calls it. model: the same without the decode. decode: the autoencoder's decoder alone. display: scaling
    the frame to the window and blitting it (pygame, offscreen).
    """
    from worldplay.checkpoint import resolve_world
    from worldplay.play import _pygame
    from worldplay.world import load_world

    pygame = _pygame()  # surfaces only: no window, no display needed

    path = resolve_world(world_path)
    opened = time.perf_counter()
    world = load_world(path, sampling_steps=sampling_steps, context_noise=context_noise)
    if world.prompts is None:
        state = world.start(np.zeros((4, *world.frame_shape), np.uint8))
    else:
        state = world.start(*world.held_out_prompt(0))
    rng = np.random.default_rng(0)
    n_act = len(world.action_names)
    g = world.config.guidance
    world.step(state, 0, guidance=g)  # as play opens a world: load, start from the prompt, compile, first frame
    first_frame_s = time.perf_counter() - opened

    fns = world._fns
    model_fn = fns["advance"]  # the frame function without the decode
    acts = jnp.zeros((1,), jnp.int32)
    flops = _flops(fns["frame"], world._ae_p, world._dyn_p, world._rew, world._stats, state, acts, jnp.float32(g))

    size = (world.frame_shape[1] * scale, world.frame_shape[0] * scale)
    screen = pygame.Surface(size)

    def display(frame: np.ndarray) -> None:
        surf = pygame.surfarray.make_surface(frame.swapaxes(0, 1))
        screen.blit(pygame.transform.scale(surf, size), (0, 0))

    total, model, decode, show = [], [], [], []
    st = state
    for i in range(frames + 20):
        a = int(rng.integers(n_act))
        t0 = time.perf_counter()
        st, frame = world.step(st, a, guidance=g)
        t1 = time.perf_counter()
        display(frame)
        t2 = time.perf_counter()
        if i >= 20:
            total.append(1000 * (t1 - t0))
            show.append(1000 * (t2 - t1))
    st2 = state
    for i in range(frames + 20):
        t0 = time.perf_counter()
        st2, z = model_fn(world._dyn_p, st2, jnp.asarray([i % n_act], jnp.int32), jnp.float32(g))
        jax.block_until_ready(z)
        t1 = time.perf_counter()
        jax.block_until_ready(fns["decode"](world._ae_p, world._stats, z))
        t2 = time.perf_counter()
        if i >= 20:
            model.append(1000 * (t1 - t0))
            decode.append(1000 * (t2 - t1))
    per_frame = [a + b for a, b in zip(total, show, strict=True)]
    result = {
        "benchmark": "play",
        **machine(),
        "world": str(path),
        "frames": frames,
        "guidance": g,
        "sampling_steps": world.config.sampling_steps,
        "tokens_per_frame": world._dyn.tokens,
        "fps": 1000.0 / statistics.fmean(per_frame),
        "first_frame_s": first_frame_s,
        **_percentiles(per_frame),
        "step": _percentiles(total),
        "model": _percentiles(model),
        "decode": _percentiles(decode),
        "display": _percentiles(show),
        "gflop_per_frame": None if flops is None else flops / 1e9,
    }
    if flops is not None:
        result["gflop_per_s"] = flops / 1e9 / (result["step"]["ms_mean"] / 1000.0)
    return result


def format_play(r: dict[str, Any]) -> str:
    lines = [
        f"machine: {r['cpu']} ({r['cores']} cores), device {r['device']}; world {r['world']}",
        f"{r['fps']:.1f} frames/s, p50 {r['ms_p50']:.1f} ms, p95 {r['ms_p95']:.1f} ms per frame "
        f"(guidance {r['guidance']:g}, {r['sampling_steps']} steps, {r['tokens_per_frame']} tokens/frame)",
        f"first frame {r['first_frame_s']:.1f} s after opening the world (load, start, compile)",
    ]
    for k in ("model", "decode", "display"):
        lines.append(f"  {k:>8}: p50 {r[k]['ms_p50']:.2f} ms, p95 {r[k]['ms_p95']:.2f} ms")
    if r.get("gflop_per_frame"):
        lines.append(f"  {r['gflop_per_frame']:.2f} GFLOP per frame, {r['gflop_per_s']:.1f} GFLOP/s achieved")
    return "\n".join(lines)


def bench_rollout(
    world_path: str | os.PathLike[str] | None = None,
    *,
    batches: Sequence[int] = (1, 8, 32),
    frames: int = 60,
    sampling_steps: int | None = None,
    context_noise: float | None = None,
) -> dict[str, Any]:
    """Frames per second a world generates for B streams stepped together (``world.step`` on [B] actions, as
    ``worldplay rollout`` does), for each B in ``batches``; and the same through the Gymnasium vector
    environment with its rewards: ``env_frames_per_s`` (the reward model's points, the default) and, for a world
    with a rate model, ``env_rate_frames_per_s`` (``reward="rate"``: one rate-model call per step besides).

    Each B starts from held-out prompts, takes 5 untimed steps (compiling), then ``frames`` timed steps with
    uniformly random actions; frames/s counts every stream's frames. Policies are left out; the environments
    run without an episode limit, so no stream restarts unless the world predicts an end.
    """
    from worldplay.checkpoint import resolve_world
    from worldplay.env import WorldModelVectorEnv
    from worldplay.world import load_world

    path = resolve_world(world_path)
    world = load_world(path, sampling_steps=sampling_steps, context_noise=context_noise)
    rng = np.random.default_rng(0)
    n_act = len(world.action_names)

    def timed(step: Any, B: int) -> float:
        for _ in range(5):
            step(rng.integers(n_act, size=B))
        t0 = time.perf_counter()
        for _ in range(frames):
            step(rng.integers(n_act, size=B))
        return (time.perf_counter() - t0) / frames

    rows = []
    for B in batches:
        if world.prompts is None:
            state = world.start(np.zeros((B, 4, *world.frame_shape), np.uint8))
        else:
            state = world.start(*world.held_out_prompt(np.arange(B) % len(world.prompts[0])))

        def world_step(actions: np.ndarray) -> None:
            nonlocal state
            state, _ = world.step(state, actions)

        dt = timed(world_step, B)
        row = {"streams": B, "frames_per_s": B / dt, "ms_per_step": 1000 * dt}
        for key, reward in [("env_frames_per_s", "events"), ("env_rate_frames_per_s", "rate")]:
            if reward == "rate" and not world.has_rate:
                continue
            envs = WorldModelVectorEnv(world, B, reward=reward)
            envs.reset(seed=0)
            row[key] = B / timed(envs.step, B)
        rows.append(row)
    return {
        "benchmark": "rollout",
        **machine(),
        "world": str(path),
        "sampling_steps": world.config.sampling_steps,
        "frames_per_stream": frames,
        "batches": rows,
    }


def format_rollout(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['cpu']} ({r['cores']} cores), device {r['device']}; world {r['world']}"]
    for row in r["batches"]:
        env = f"; environment {row['env_frames_per_s']:.1f}" if "env_frames_per_s" in row else ""
        env += f", with expected rewards {row['env_rate_frames_per_s']:.1f}" if "env_rate_frames_per_s" in row else ""
        lines.append(
            f"  {row['streams']:>3} streams: {row['frames_per_s']:7.1f} frames/s ({row['ms_per_step']:.1f} ms a step)"
            + env
        )
    return "\n".join(lines)


# Dense peak FLOP/s of accelerators, for model FLOPs utilisation (TF32 tensor cores for float32 matmuls).
PEAK_FLOPS = {"H100": 494e12, "H200": 494e12, "A100": 156e12}


def _train_config(config: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> tuple[Any, str]:
    """The config to time: the given file, else ``configs/boxing.toml`` of a checkout, else the shipped world's.

    The shipped world's folder holds its model, not its training schedule (``source`` ends in ``world.json``).
    """
    from worldplay.checkpoint import default_world, read_world_meta
    from worldplay.config import config_from_dict, load_config

    if config is None and not Path("configs/boxing.toml").is_file():
        world = default_world()
        meta = read_world_meta(world)
        values = {k: meta[k] for k in ("name", "autoencoder", "dynamics")}
        return config_from_dict(values, overrides), str(Path(world) / "world.json")
    config = config or "configs/boxing.toml"
    return load_config(config, overrides), str(config)


def bench_train(
    config: str | os.PathLike[str] | None = None,
    *,
    steps: int = 10,
    batch: int | None = None,
    peak_tflops: float | None = None,
    overrides: Sequence[str] = (),
    project: bool = True,
) -> dict[str, Any]:
    """Training throughput of the dynamics stage on synthetic latents: sequences/s, tokens/s, FLOPs, MFU;
    and the projected wall time of the config's whole schedule on this machine.

    Times the jitted training step alone (the same step ``worldplay train dynamics`` runs), after compiling.
    Model FLOPs utilisation is the model's matrix-product FLOPs per step (three times a forward pass, four with
    ``dynamics.own_context_prob``; ``Dynamics.matmul_flops``, counted from the config, so the same on every
    backend) over the step time and the device's dense peak: looked up for known GPUs (``PEAK_FLOPS``) or given
    as ``peak_tflops``. XLA's own count of the compiled step is reported beside it as a check
    (``hlo_tflop_per_step``).

    With ``project`` (and a config file: the shipped world's folder has no schedule), every stage of
    ``worldplay train world`` is timed the way the run itself projects it (``train.world.project_schedule``,
    at the config's own batch sizes): ``stages`` holds each one's seconds per step and ``projected_s`` the
    seconds of all their steps from scratch.
    """
    from flax import nnx

    from worldplay.models.dynamics import Dynamics
    from worldplay.train.dynamics import DynamicsObjective
    from worldplay.train.loop import make_optimizer, make_train_step

    cfg, source = _train_config(config, overrides)
    B = batch or cfg.train_dynamics.batch_size
    T = cfg.dynamics.window
    latent = cfg.autoencoder.latent_shape
    num_actions = 18  # the full Atari action set
    stage = DynamicsObjective(cfg)
    model = Dynamics(cfg.dynamics, latent, num_actions, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = make_optimizer(cfg.train_dynamics)
    opt_state = tx.init(params)
    ema = jax.tree.map(jnp.copy, params)
    step = jax.jit(make_train_step(stage, graphdef, tx, 0.999), donate_argnums=(0, 1, 2))
    rng = np.random.default_rng(0)
    data = {
        "latents": jnp.asarray(rng.normal(size=(B, T, *latent)).astype(np.float16)),
        "actions": jnp.asarray(rng.integers(0, num_actions, (B, T)).astype(np.int32)),
    }
    key = jax.random.key(0)
    flops = _flops(step, params, ema, opt_state, data, key, jnp.float32(1))
    for i in range(3):
        params, ema, opt_state, m = step(params, ema, opt_state, data, key, jnp.float32(i + 1))
    jax.block_until_ready(m)
    t = time.perf_counter()
    for i in range(steps):
        params, ema, opt_state, m = step(params, ema, opt_state, data, key, jnp.float32(i + 4))
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / steps
    tokens = B * T * model.tokens
    # forward and backward; with ``own_context_prob`` one more forward pass makes the model's own context
    model_flops = (4 if cfg.dynamics.own_context_prob else 3) * B * model.matmul_flops(T)
    result = {
        "benchmark": "train",
        **machine(),
        "config": source,
        "batch": B,
        "window": T,
        "tokens_per_sequence": T * model.tokens,
        "params": int(sum(x.size for x in jax.tree.leaves(params))),
        "ms_per_step": 1000 * dt,
        "sequences_per_s": B / dt,
        "tokens_per_s": tokens / dt,
        "tflop_per_step": model_flops / 1e12,
        "hlo_tflop_per_step": None if flops is None else flops / 1e12,
        "achieved_tflop_per_s": model_flops / dt / 1e12,
    }
    dev = jax.devices()[0]
    peak = 1e12 * peak_tflops if peak_tflops else next((v for k, v in PEAK_FLOPS.items() if k in dev.device_kind), None)
    result["peak_tflop_per_s"] = None if peak is None else peak / 1e12
    result["mfu"] = None if peak is None else model_flops / dt / peak
    result["projected_s"], result["stages"] = None, None
    if project and not source.endswith("world.json"):
        from worldplay.train.world import project_schedule

        plan = project_schedule(cfg, resume=False)
        keys = ("steps", "batch_size", "s_per_step", "projected_s")
        result["stages"] = {name: {k: st[k] for k in keys} for name, st in plan["stages"].items()}
        for name, st in plan["stages"].items():
            if "early_window" in st:  # the early steps on fewer frames, timed apart
                e = st["early_window"]
                result["stages"][name]["early_window"] = {k: e[k] for k in ("frames", "steps_left", "s_per_step")}
        result["projected_s"] = plan["projected_s"]
    return result


def format_train(r: dict[str, Any]) -> str:
    line = (
        f"machine: {r['cpu']} ({r['cores']} cores), device {r['device']}; {r['config']}, batch {r['batch']} x "
        f"{r['tokens_per_sequence']} tokens, {r['params'] / 1e6:.1f}M params\n"
        f"{r['ms_per_step']:.1f} ms/step, {r['sequences_per_s']:.1f} sequences/s, {r['tokens_per_s']:.0f} tokens/s"
    )
    line += f"\n{r['tflop_per_step']:.4f} TFLOP/step (model matmuls"
    if r.get("hlo_tflop_per_step") is not None:
        line += f"; XLA counts {r['hlo_tflop_per_step']:.4f}"
    line += f"), {r['achieved_tflop_per_s']:.3f} TFLOP/s achieved"
    if r.get("mfu") is not None:
        line += f", MFU {100 * r['mfu']:.1f}% of {r['peak_tflop_per_s']:g} TFLOP/s peak"
    else:
        line += " (MFU: peak of this device unknown; give --peak-tflops)"
    if r.get("stages"):
        from worldplay.train.world import format_schedule

        stages = {k: {**v, "steps_left": v["steps"]} for k, v in r["stages"].items()}
        schedule = format_schedule({"stages": stages, "projected_s": r["projected_s"]})
        line += f"\nschedule of {r['config']} on this machine:\n{schedule}"
    return line
