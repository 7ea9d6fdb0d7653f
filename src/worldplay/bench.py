"""Benchmarks behind ``worldplay bench``: measured here, on this machine, never in a test."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from worldplay.data.format import open_dataset
from worldplay.data.loader import make_loader
from worldplay.data.record import play_episode, record
from worldplay.data.sources import StickyPolicy, make_source


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
