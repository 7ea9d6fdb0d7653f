"""The training loop under faults: several devices, SIGKILL, NaN, checkpoint retention, bad configs.

Every run here is tiny (a one-level autoencoder on 4-frame batches); the runs in
subprocesses share a persistent compilation cache so a rerun does not recompile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conftest import FAST_COMPILE, ROOT
from worldplay.cli import main
from worldplay.config import load_config
from worldplay.data.loader import make_loader
from worldplay.errors import WorldplayError
from worldplay.train.autoencoder import AutoencoderStage
from worldplay.train.loop import RunPaths, TrainingDiverged, check_resumable, make_optimizer, restore_training, train

SECTION = "train_autoencoder"  # the autoencoder stage's [train_<stage>] section
TINY_MODEL = ["autoencoder.channels=[8]", "autoencoder.blocks=0", "autoencoder.latent_channels=4"]
TMP_MARK = "orbax-checkpoint-tmp"


def _tiny_config(dataset: Path, runs: Path, *train_sets: str):
    sets = [f"data.dataset={dataset}", "data.num_threads=0", *TINY_MODEL, f"{SECTION}.runs_dir={runs}"]
    sets += [f"{SECTION}.{s}" for s in train_sets]
    return load_config(ROOT / "configs" / "toy.toml", sets)


def _abstract_state(cfg):
    """Shapes of (params, opt_state) of the autoencoder stage of ``cfg``, without running any init."""
    model = nnx.eval_shape(lambda: AutoencoderStage(cfg).build(nnx.Rngs(0)))
    _, params = nnx.split(model, nnx.Param)
    return params, jax.eval_shape(make_optimizer(getattr(cfg, SECTION)).init, params)


def _restore_all(ckpt_dir: Path, cfg) -> dict[int, dict]:
    """Restore every checkpoint in ``ckpt_dir`` the way a resumed run does; return them by step."""
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert not [n for n in names if TMP_MARK in n], f"partial checkpoint left behind: {names}"
    assert all(n.isdigit() for n in names), names
    params, opt_state = _abstract_state(cfg)
    replicated = jax.sharding.NamedSharding(
        jax.make_mesh((jax.device_count(),), ("data",)), jax.sharding.PartitionSpec()
    )
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        assert sorted(manager.all_steps()) == sorted(int(n) for n in names)
        out = {}
        for step in manager.all_steps():
            r = restore_training(manager, step, params, opt_state, replicated)
            for part in ("params", "ema", "opt_state"):
                leaves = jax.tree.leaves(r[part])
                assert leaves and all(bool(jnp.isfinite(x).all()) for x in leaves), (step, part)
            meta = json.loads((ckpt_dir / str(step) / "meta" / "metadata").read_text())
            assert meta["step"] == step
            out[step] = r
        return out
    finally:
        manager.close()


# ---------------------------------------------------------------------------
# 1. Data parallel: 4 devices compute what 1 device computes
# ---------------------------------------------------------------------------

_DP_SCRIPT = r"""
import sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from worldplay.config import load_config
from worldplay.train.autoencoder import AutoencoderStage
from worldplay.train.loop import _to_global, make_mesh, make_optimizer, make_train_step

out, config, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
cfg = load_config(config, sets)
tc = cfg.train_autoencoder
stage = AutoencoderStage(cfg)
mesh = make_mesh()
replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
graphdef, params = nnx.split(stage.build(nnx.Rngs(tc.seed)), nnx.Param)
params = jax.device_put(params, replicated)
raw = {"frames": np.random.default_rng(0).integers(0, 256, (8, 1, 64, 64, 3), dtype=np.uint8)}
batch = _to_global(stage.batch(raw), data_sharding)
key = jax.random.key(0)

def loss_fn(p, b, k):
    return stage.loss(nnx.merge(graphdef, p), b, k)[0]

vg = jax.jit(jax.value_and_grad(loss_fn), in_shardings=(replicated, data_sharding, replicated),
             out_shardings=(replicated, replicated))
loss, grads = vg(params, batch, key)

tx = make_optimizer(tc)
ema = jax.tree.map(jnp.copy, params)
opt_state = jax.device_put(tx.init(params), replicated)
step = jax.jit(make_train_step(stage, graphdef, tx, tc.ema_decay),
               in_shardings=(replicated, replicated, replicated, data_sharding, replicated, replicated),
               out_shardings=(replicated, replicated, replicated, replicated))
new_params, _, _, metrics = step(params, ema, opt_state, batch, key, jnp.float32(1))

frames = batch["frames"]
res = {
    "device_count": jax.device_count(),
    "batch_shards": len(frames.addressable_shards),
    "shard_rows": sorted(s.data.shape[0] for s in frames.addressable_shards),
    "param_devices": len(jax.tree.leaves(params)[0].sharding.device_set),
    "loss": np.asarray(loss),
    "step_loss": np.asarray(metrics["loss"]),
    "step_grad_norm": np.asarray(metrics["grad_norm"]),
}
for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    res["grad" + jax.tree_util.keystr(path)] = np.asarray(g)
for path, p in jax.tree_util.tree_flatten_with_path(new_params)[0]:
    res["new" + jax.tree_util.keystr(path)] = np.asarray(p)
np.savez(out, **res)
"""


def test_data_parallel_matches_one_device(tmp_path):
    """Loss, gradients and one optimizer step on 4 CPU devices equal those on 1 device."""
    sets = [*TINY_MODEL, "autoencoder.blocks=1", f"{SECTION}.warmup=0"]
    procs = {}
    for n in (1, 4):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = FAST_COMPILE + (f" --xla_force_host_platform_device_count={n}" if n > 1 else "")
        cmd = [sys.executable, "-c", _DP_SCRIPT, str(tmp_path / f"{n}.npz"), "configs/toy.toml", *sets]
        procs[n] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for n, p in procs.items():
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, f"{n}-device run failed:\n{out}"
    one, four = (dict(np.load(tmp_path / f"{n}.npz")) for n in (1, 4))

    assert int(one["device_count"]) == 1
    assert int(four["device_count"]) == 4  # the flag really gave the subprocess 4 devices
    assert int(four["batch_shards"]) == 4 and four["shard_rows"].tolist() == [2, 2, 2, 2]  # split over "data"
    assert int(four["param_devices"]) == 4  # params replicated on all of them
    assert one.keys() == four.keys()
    grads = [k for k in one if k.startswith("grad")]
    assert len(grads) >= 4 and any(np.abs(one[k]).max() > 0 for k in grads)
    for k in one:
        if k.startswith(("loss", "step_", "grad", "new")):
            np.testing.assert_allclose(four[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)


# ---------------------------------------------------------------------------
# 2. SIGKILL at a random moment, then resume
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path, fresh_toy_dataset):
    """A run killed at a random moment resumes from its latest complete checkpoint; no partial one survives."""
    rng = random.Random(20240611)
    runs = tmp_path / "runs"
    train_sets = ["batch_size=4", "steps=40", "warmup=0", "log_every=5", "eval_every=1000", "checkpoint_every=5",
                  "eval_batches=1", "keep=2"]  # fmt: skip
    sets = [f"data.dataset={fresh_toy_dataset}", "data.holdout=0.25", "data.num_threads=0", *TINY_MODEL,
            f"{SECTION}.runs_dir={runs}", *(f"{SECTION}.{s}" for s in train_sets)]  # fmt: skip
    cmd = [sys.executable, "-m", "worldplay", "train", "autoencoder", "--config", "configs/toy.toml", "--quiet"]
    cmd += [a for s in sets for a in ("--set", s)]
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),  # the rerun reuses the first run's compilations
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        XLA_FLAGS=FAST_COMPILE,
    )
    ckpts = runs / "toy" / "autoencoder" / "checkpoints"

    def complete_steps() -> list[int]:
        return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.exists() else []

    with open(tmp_path / "first.log", "w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not complete_steps():
                assert proc.poll() is None, "the run ended before its first checkpoint:\n" + log.read()
                assert time.monotonic() < deadline, "no checkpoint after 120 s"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))  # the run needs ~2.5 s more: the kill lands mid-run
            still_running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        log.seek(0)
        assert still_running, "the run finished before it was killed; lengthen it:\n" + log.read()
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in ckpts.iterdir())
    latest = max(complete_steps())
    assert 0 < latest < 40, left

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    m = re.search(r"resuming \S+ from step (\d+)", output)
    assert m, output
    assert int(m.group(1)) == latest, (left, output)  # the latest complete checkpoint, not a partial one
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert result["step"] == 40

    restored = _restore_all(ckpts, _tiny_config(fresh_toy_dataset, runs))
    assert 40 in restored and len(restored) <= 3, sorted(restored)  # keep=2 latest (+ the best)


# ---------------------------------------------------------------------------
# 3 and 4. In-process runs with wrapper stages
# ---------------------------------------------------------------------------


_INITIAL: dict = {}  # AutoencoderConfig -> (graphdef, numpy state) of its seed-0 init


class _Wrapped:
    """The autoencoder stage with a cheap evaluation; subclasses change one more thing.

    ``build`` gives the same seed-0 init every time, computed once per session:
    compiling the initialisers takes seconds on this machine, training the tiny
    model a fraction of that.
    """

    name = AutoencoderStage.name

    def __init__(self, cfg):
        self.inner = AutoencoderStage(cfg)

    def build(self, rngs):
        key = self.inner.cfg.autoencoder
        if key not in _INITIAL:
            graphdef, state = nnx.split(nnx.jit(self.inner.build)(nnx.Rngs(0)))
            _INITIAL[key] = graphdef, jax.tree.map(np.asarray, state)
        graphdef, state = _INITIAL[key]
        return nnx.merge(graphdef, jax.tree.map(jnp.asarray, state))

    def batch(self, raw):
        return self.inner.batch(raw)

    def loss(self, model, batch, key):
        return self.inner.loss(model, batch, key)

    def evaluate(self, model, batches):
        return {"eval_loss": 1.0}, {}

    def extras(self, model):
        return {}


class _PoisonedStage(_Wrapped):
    """The loss (and so every gradient) becomes NaN from the ``nan_from``-th training batch on."""

    def __init__(self, cfg, nan_from: int):
        super().__init__(cfg)
        self.calls, self.nan_from = 0, nan_from

    def batch(self, raw):
        self.calls += 1
        out = dict(self.inner.batch(raw))
        out["scale"] = np.full(len(out["frames"]), np.nan if self.calls >= self.nan_from else 1.0, np.float32)
        return out

    def loss(self, model, batch, key):
        loss, metrics = self.inner.loss(model, batch, key)
        return loss * jnp.mean(batch["scale"]), metrics


class _ScriptedEvalStage(_Wrapped):
    """``evaluate`` reports the next of a fixed sequence of eval losses (and computes nothing)."""

    def __init__(self, cfg, eval_losses):
        super().__init__(cfg)
        self.eval_losses = eval_losses

    def evaluate(self, model, batches):
        return {"eval_loss": next(self.eval_losses)}, {}


def _run(stage, cfg, dataset: Path):
    tc = getattr(cfg, SECTION)
    loader = make_loader(dataset, window=1, batch_size=tc.batch_size, split="all", seed=0, num_threads=0)
    eval_batch = next(iter(loader))
    messages: list[str] = []
    return train(stage, cfg, iter(loader), lambda: [eval_batch], progress=False, log=messages.append), messages


@pytest.mark.parametrize("log_every", [1, 50], ids=["seen-by-loss-check", "seen-by-weight-check"])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, toy_dataset, log_every):
    """Loss NaN from step 13: the run stops with TrainingDiverged, checkpoints 5 and 10 stay and restore."""
    runs = tmp_path / "runs"
    cfg = _tiny_config(toy_dataset, runs, "batch_size=4", "steps=30", "warmup=0", f"log_every={log_every}",
                       "eval_every=1000", "eval_batches=1", "checkpoint_every=5", "keep=3")  # fmt: skip
    with pytest.raises(TrainingDiverged) as exc:
        _run(_PoisonedStage(cfg, nan_from=13), cfg, toy_dataset)
    message = str(exc.value)
    ckpts = runs / "toy" / "autoencoder" / "checkpoints"
    if log_every == 1:  # caught by the loss check at the step it happened
        assert "loss is nan at step 13" in message
    else:  # not logged before the next checkpoint: caught by the weight check instead of being saved
        assert "weights are not finite at step 15; not saved" in message
    assert f"(step 10) in {ckpts}" in message
    assert issubclass(TrainingDiverged, WorldplayError)  # so the CLI prints "error: ..." and exits 2
    restored = _restore_all(ckpts, cfg)  # all finite: no checkpoint with NaN weights was written
    assert sorted(restored) == [5, 10]

    # Resuming (here with the cause gone) continues from the last good checkpoint.
    cfg = _tiny_config(toy_dataset, runs, "batch_size=4", "steps=12", "warmup=0", "log_every=1",
                       "eval_every=1000", "eval_batches=1", "checkpoint_every=5", "keep=3")  # fmt: skip
    result, messages = _run(_Wrapped(cfg), cfg, toy_dataset)
    assert result["step"] == 12 and any("from step 10" in m for m in messages), messages


def test_best_checkpoint_is_kept_besides_the_latest(tmp_path, toy_dataset):
    """keep=1 and eval losses 3, 1, 2, 4 at steps 5..20: steps 10 (best) and 20 (latest) stay, also after a resume."""
    runs = tmp_path / "runs"
    ckpts = runs / "toy" / "autoencoder" / "checkpoints"
    eval_losses = iter([3.0, 1.0, 2.0, 4.0, 5.0, 6.0])
    common = ["batch_size=4", "warmup=0", "log_every=5", "eval_every=5", "checkpoint_every=5", "keep=1"]

    cfg = _tiny_config(toy_dataset, runs, *common, "steps=20")
    result, _ = _run(_ScriptedEvalStage(cfg, eval_losses), cfg, toy_dataset)
    assert result["eval_loss"] == 4.0
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [10, 20]

    # What a SIGKILL during Orbax's file-by-file deletion of an old checkpoint leaves: a step directory
    # without its metrics (and more). It must not be kept forever for lacking metrics.
    half_deleted = ckpts / "15"
    shutil.copytree(ckpts / "20", half_deleted)
    for part in ("metrics", "params"):
        shutil.rmtree(half_deleted / part, ignore_errors=True)

    # A resumed run (a new manager: nothing is kept in memory) still knows step 10 is the best.
    cfg = _tiny_config(toy_dataset, runs, *common, "steps=30")
    result, messages = _run(_ScriptedEvalStage(cfg, eval_losses), cfg, toy_dataset)
    assert any("from step 20" in m for m in messages), messages
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [10, 30]
    assert sorted(_restore_all(ckpts, cfg)) == [10, 30]


# ---------------------------------------------------------------------------
# 5. A bad config is refused before anything is built
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("autoencoder.chanels=[8]", r"autoencoder\.chanels: unknown key; did you mean 'channels'\?"),
        (f"{SECTION}.batch_size=0", rf"{SECTION}\.batch_size: must be >= 1, got 0"),
        (f"{SECTION}.steps=-5", rf"{SECTION}\.steps: must be >= 1, got -5"),
    ],
)
def test_bad_config_is_refused_before_anything_compiles(tmp_path, toy_dataset, capsys, monkeypatch, override, message):
    import worldplay.train.autoencoder as ae_stage
    import worldplay.train.loop as loop

    def must_not_run(*args, **kwargs):
        raise AssertionError("training started despite a bad config")

    monkeypatch.setattr(ae_stage, "train_autoencoder", must_not_run)
    monkeypatch.setattr(loop, "train", must_not_run)
    compiled: list[str] = []

    def on_event(name, duration, **kwargs):
        if name.startswith("/jax/core/compile/"):
            compiled.append(name)

    runs = tmp_path / "runs"
    argv = ["train", "autoencoder", "--config", "configs/toy.toml", "--quiet"]
    for s in [f"data.dataset={toy_dataset}", f"{SECTION}.runs_dir={runs}", override]:
        argv += ["--set", s]
    monkeypatch.chdir(ROOT)
    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        assert main(argv) == 2
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)
    assert not compiled, compiled  # nothing was traced or compiled
    err = capsys.readouterr().err
    assert re.search(r"^error: configs/toy\.toml: " + message, err, re.M), err
    assert not runs.exists() and not list(tmp_path.glob("**/checkpoints"))


def test_resuming_with_a_changed_model_is_refused(tmp_path, toy_dataset):
    """A run resumed with other model shapes is refused with the key and both values, before anything
    is built; its checkpoints and its config.json are left as they were."""
    runs = tmp_path / "runs"
    train_sets = ("batch_size=4", "steps=5", "warmup=0", "eval_every=1000", "eval_batches=1", "checkpoint_every=5")
    cfg = _tiny_config(toy_dataset, runs, *train_sets)
    _run(AutoencoderStage(cfg), cfg, toy_dataset)
    run = runs / "toy" / "autoencoder"
    saved = (run / "config.json").read_text()
    changed = dataclasses.replace(cfg, autoencoder=dataclasses.replace(cfg.autoencoder, latent_channels=8))
    with pytest.raises(WorldplayError, match=r"autoencoder\.latent_channels = 4, the config now says 8"):
        _run(AutoencoderStage(changed), changed, toy_dataset)
    assert (run / "config.json").read_text() == saved
    assert sorted(_restore_all(run / "checkpoints", cfg)) == [5]
    # how the world samples is not what it learned: changing it does not block a resume
    dyn = cfg.dynamics
    sampler = dataclasses.replace(dyn, sampling_steps=1, sampling_context_noise=0.0, guidance=3.0)
    check_resumable(RunPaths(run), dataclasses.replace(cfg, dynamics=sampler), "dynamics")
    # nor does fine-tuning a trained world on its own predictions
    own = dataclasses.replace(cfg, dynamics=dataclasses.replace(dyn, own_context_prob=0.5))
    check_resumable(RunPaths(run), own, "dynamics")
    wider = dataclasses.replace(cfg, dynamics=dataclasses.replace(dyn, width=2 * dyn.width))
    with pytest.raises(WorldplayError, match=r"dynamics\.width"):
        check_resumable(RunPaths(run), wider, "dynamics")
    # a run from before a key existed resumes at that key's default, and only there
    old_run = json.loads((run / "config.json").read_text())
    del old_run["autoencoder"]["motion_weight"]
    (run / "config.json").write_text(json.dumps(old_run))
    check_resumable(RunPaths(run), cfg, "autoencoder")
    weighted = dataclasses.replace(cfg, autoencoder=dataclasses.replace(cfg.autoencoder, motion_weight=1.0))
    with pytest.raises(WorldplayError, match=r"autoencoder\.motion_weight = 0\.0, the config now says 1\.0"):
        check_resumable(RunPaths(run), weighted, "autoencoder")
    (run / "config.json").write_text(saved)
    longer = dataclasses.replace(cfg, train_autoencoder=dataclasses.replace(cfg.train_autoencoder, steps=10))
    _, messages = _run(AutoencoderStage(longer), longer, toy_dataset)
    assert any("from step 5" in m for m in messages), messages
