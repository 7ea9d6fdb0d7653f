"""The FLOP counts behind ``worldplay bench`` (what the benchmarks compute, not how fast they run)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from worldplay import bench
from worldplay.config import DynamicsConfig
from worldplay.models.dynamics import Dynamics


def _xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


@pytest.mark.parametrize(
    ("latent", "cfg"),
    [
        ((8, 8, 16), DynamicsConfig(patch=2, width=96, depth=2, heads=2, window=8)),
        ((8, 8, 4), DynamicsConfig(patch=1, width=64, depth=3, heads=4, mlp_ratio=2.0, window=5)),
    ],
)
def test_matmul_flops_match_xla_count_of_the_forward_pass(latent, cfg):
    """The model FLOPs of MFU, counted from the config, agree with XLA's count of the compiled forward pass
    to within what the left-out norms, softmax and activations cost."""
    model = Dynamics(cfg, latent, 18, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    B, T = 2, cfg.window
    args = (params, jnp.zeros((B, T, *latent)), jnp.full((B, T), 0.5), jnp.zeros((B, T), jnp.int32))
    xla = _xla_flops(lambda p, z, t, a: nnx.merge(graphdef, p)(z, t, a), *args)
    model_flops = B * model.matmul_flops(T)
    assert 0.9 * xla < model_flops <= xla


def test_train_bench_reports_mfu_against_the_given_peak():
    r = bench.bench_train("configs/toy.toml", steps=1, batch=2, peak_tflops=0.04, project=False)
    assert r["hlo_tflop_per_step"] == pytest.approx(r["tflop_per_step"], rel=0.1)
    assert r["mfu"] == pytest.approx(r["achieved_tflop_per_s"] / 0.04)
    assert "MFU" in bench.format_train(r)
    assert "--peak-tflops" in bench.format_train({**r, "mfu": None, "peak_tflop_per_s": None})


def test_train_bench_projects_the_whole_schedule():
    """``projected_s``: every stage of the config, its steps times its measured seconds per step."""
    tiny = ["autoencoder.channels=[8, 8, 8]", "autoencoder.blocks=0", "dynamics.width=32", "dynamics.depth=1",
            "train_autoencoder.batch_size=4", "train_autoencoder.steps=400", "train_dynamics.batch_size=2",
            "train_dynamics.steps=700", "train_reward.batch_size=4", "train_reward.steps=300",
            "train_dynamics.early_window=2", "train_dynamics.early_window_steps=200"]  # fmt: skip
    r = bench.bench_train("configs/toy.toml", steps=1, overrides=tiny)
    assert set(r["stages"]) == {"autoencoder", "dynamics", "reward"}
    assert r["stages"]["reward"]["steps"] == 300
    assert r["stages"]["autoencoder"]["steps"] == 400 and r["stages"]["dynamics"]["steps"] == 700
    # the dynamics stage's first 200 steps on 2 frames of each window are timed apart from the other 500
    early = r["stages"]["dynamics"].pop("early_window")
    assert early["frames"] == 2 and early["steps_left"] == 200 and early["s_per_step"] > 0
    expected = sum(s["steps"] * s["s_per_step"] for s in r["stages"].values())
    expected += 200 * (early["s_per_step"] - r["stages"]["dynamics"]["s_per_step"])
    assert r["projected_s"] == pytest.approx(expected) and r["projected_s"] > 0
    r["stages"]["dynamics"]["early_window"] = early
    assert "200 x" in bench.format_train(r) and "on 2 frames" in bench.format_train(r)


def test_rollout_bench_reports_every_stream_count():
    r = bench.bench_rollout("boxing", batches=(1, 2), frames=2)
    assert [row["streams"] for row in r["batches"]] == [1, 2]
    assert all(row["frames_per_s"] > 0 for row in r["batches"])
    # the environments too, with the reward model's points and (the Boxing world has a rate model) expected rewards
    assert all(row["env_frames_per_s"] > 0 and row["env_rate_frames_per_s"] > 0 for row in r["batches"])
    assert "2 streams" in bench.format_rollout(r) and "with expected rewards" in bench.format_rollout(r)


def test_play_bench_reports_frames_per_second_and_the_first_frame():
    r = bench.bench_play("toy-push", frames=3)
    assert r["fps"] > 0 and r["step"]["ms_p50"] > 0 and r["decode"]["ms_p50"] > 0
    assert r["first_frame_s"] > 0  # opening the world: load, start, compile, one step
    assert "first frame" in bench.format_play(r)


def test_worlds_compile_their_frame_programs_at_level_2_on_the_cpu_unless_told_otherwise(monkeypatch):
    """`worldplay.compiled.world_options`: a process's own options first (the tests' `optimised`), then an
    optimisation level in XLA_FLAGS (the tests' level 0, a user's own), else level 2 on the CPU."""
    from worldplay import compiled
    from worldplay.checkpoint import resolve_world
    from worldplay.world import _compiled, load_world

    level_2 = (("xla_backend_optimization_level", 2),)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    assert compiled.world_options() == compiled.WORLD_CPU_OPTIONS == dict(level_2)
    world = load_world(resolve_world("toy-push"))
    defs = (world._ae_def, world._dyn_def, world._rew_def)
    assert world._fns is _compiled(*defs, level_2)  # its programs are made with the options keyed in
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert compiled.world_options() is None
    assert load_world(resolve_world("toy-push"))._fns is _compiled(*defs, None)
    with compiled.hot_options({"xla_backend_optimization_level": 1}):
        assert compiled.world_options() == {"xla_backend_optimization_level": 1}
