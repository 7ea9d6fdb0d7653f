"""`worldplay train world`: every stage in order with a projected wall time, resuming after a SIGKILL between
stages; and a training run of 2 processes (jax.distributed on localhost) equal to one process with 2 devices.

Everything trains tiny models for a few steps in subprocesses that share a persistent compilation cache.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import FAST_COMPILE, ROOT
from worldplay.config import load_config
from worldplay.errors import WorldplayError
from worldplay.train.reward import train_reward
from worldplay.train.world import format_schedule, project_schedule, stages_of, train_world

TINY = [
    "data.num_threads=0", "data.holdout=0.3",
    "autoencoder.channels=[8, 8, 8]", "autoencoder.blocks=0", "dynamics.width=32", "dynamics.depth=1",
]  # fmt: skip
STAGE_SETS = ["batch_size=4", "steps=12", "warmup=0", "log_every=4", "eval_every=6", "checkpoint_every=6",
              "eval_batches=1"]  # fmt: skip


def _sets(dataset: Path, runs: Path) -> list[str]:
    sets = [f"data.dataset={dataset}", *TINY, "decoder.enabled=true", "decoder.episodes=2"]
    sets += ["rate.enabled=true", "rate.frames=2", "rate.lag=1", "rate.keys=4", "rate.horizon=4", "rate.width=8"]
    for section in ("train_autoencoder", "train_dynamics", "train_reward", "train_rate", "train_decoder"):
        sets += [f"{section}.runs_dir={runs}", *(f"{section}.{s}" for s in STAGE_SETS)]
    return sets


def _env(tmp_path: Path, devices: int = 1) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path.parent / "jax-cache"),  # shared by the runs of one test
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        XLA_FLAGS=FAST_COMPILE + (f" --xla_force_host_platform_device_count={devices}" if devices > 1 else ""),
    )
    return env


def _cli(command: list[str], sets: list[str]) -> list[str]:
    return [sys.executable, "-m", "worldplay", *command, "--quiet", *(a for s in sets for a in ("--set", s))]


@pytest.mark.slow
def test_train_world_runs_every_stage_and_resumes_after_a_sigkill_between_stages(tmp_path, fresh_toy_dataset):
    runs = tmp_path / "runs"
    # the dynamics stage's first 6 steps train on the first 2 frames of each window, the rest on all 8
    sets = [*_sets(fresh_toy_dataset, runs), "train_dynamics.early_window=2", "train_dynamics.early_window_steps=6"]
    cmd = _cli(["train", "world", "--config", "configs/toy.toml"], sets)
    env = _env(tmp_path)
    lines = []
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("== stage 2/5: dynamics"):
                proc.send_signal(signal.SIGKILL)  # the autoencoder is done; the dynamics stage has not stepped
                break
    finally:
        proc.kill()
        proc.wait()
    first = "".join(lines)
    assert proc.returncode == -signal.SIGKILL, first
    # the projection is printed before the first step: every stage timed, 12 steps each left
    assert first.index("projected") < first.index("== stage 1/5: autoencoder"), first
    for stage in ("autoencoder ", "reward      ", "rate        ", "decoder     "):
        assert f"{stage}      12 of 12 steps x" in first, first
    early = r"dynamics          12 of 12 steps \(batch 4\): 6 x [\d.]+ s/step on 2 frames \+ 6 x [\d.]+ s/step"
    assert re.search(early, first), first
    ae_ckpts = runs / "toy" / "autoencoder" / "checkpoints"
    assert (ae_ckpts / "12").is_dir()
    dyn_ckpts = runs / "toy" / "dynamics" / "checkpoints"
    assert not dyn_ckpts.exists() or not [p for p in dyn_ckpts.iterdir() if p.name.isdigit()]

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "autoencoder  done (12 steps)" in out, out  # nothing left to project for the finished stage
    assert f"resuming {runs / 'toy' / 'autoencoder'} from step 12" in out, out
    assert "resuming" not in out.split("== stage 2/5: dynamics")[1], out  # the dynamics stage starts afresh
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert {result[s]["step"] for s in ("autoencoder", "dynamics", "reward", "rate", "decoder")} == {12}
    world = Path(result["world"])  # the last stage's: the dynamics stage's world with the fine-tuned decoder
    assert world == runs / "toy" / "decoder" / "world"
    meta = json.loads((world / "world.json").read_text())
    assert meta["steps"] == {"autoencoder": 12, "dynamics": 12, "decoder": 12}
    assert meta["reward"]["step"] == 12 and "reward_f1" in meta["reward"]["eval"]  # the reward stage joined it
    assert meta["rate"]["step"] == 12 and meta["rate"]["config"]["keys"] == 4  # and so did the rate stage
    assert "psnr_h1" in meta["decoder"]["eval"]
    # the cheap held-out evaluation, logged against steps and wall-clock seconds
    rows = list(map(json.loads, (runs / "toy" / "dynamics" / "logs" / "metrics.jsonl").open()))
    frames = {r["step"]: r["frames"] for r in rows if "loss" in r}
    assert frames == {4: 2, 8: 8, 12: 8}, frames  # the early window, then the whole one
    evals = [r for r in rows if "eval" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert evals[0]["elapsed_s"] < evals[1]["elapsed_s"]
    for key in ("psnr_h1", "psnr_h4", "psnr_h8", "delta_psnr_h4", "delta_psnr_h8", "margin_repeat_h1"):
        assert np.isfinite(evals[1]["eval"][key]), key
    # a reward model trained again later (here: resumed for 6 more steps) goes into the world that ships too
    train_reward(load_config(ROOT / "configs" / "toy.toml", [*sets, "train_reward.steps=18"]), progress=False)
    for stage in ("dynamics", "decoder"):
        assert json.loads((runs / "toy" / stage / "world" / "world.json").read_text())["reward"]["step"] == 18, stage


def test_projection_is_steps_left_times_measured_seconds_per_step(tmp_path, toy_dataset):
    cfg = load_config(ROOT / "configs" / "toy.toml", _sets(toy_dataset, tmp_path / "runs"))
    plan = project_schedule(cfg)
    assert set(plan["stages"]) == {"autoencoder", "dynamics", "reward", "rate", "decoder"}
    for stage in plan["stages"].values():
        assert stage["steps_left"] == 12 and stage["s_per_step"] > 0 and stage["timed_steps"] >= 4
        assert stage["projected_s"] == pytest.approx(12 * stage["s_per_step"])
    assert plan["projected_s"] == pytest.approx(sum(s["projected_s"] for s in plan["stages"].values()))
    assert "projected" in format_schedule(plan)
    # the rate stage is one only when switched on; a rate stage that would fail for a missing extra dataset
    # is refused before the first stage starts (train world checks every stage's inputs first)
    off = load_config(ROOT / "configs" / "toy.toml", [*_sets(toy_dataset, tmp_path / "runs"), "rate.enabled=false"])
    assert stages_of(off) == ("autoencoder", "dynamics", "reward", "decoder")
    sets = [*_sets(toy_dataset, tmp_path / "runs"), f"rate.extra_datasets=['{tmp_path}/none']"]
    missing = load_config(ROOT / "configs" / "toy.toml", sets)
    with pytest.raises(WorldplayError, match="none"):
        train_world(missing, progress=False, project=False, log=lambda _: None)
    assert not (tmp_path / "runs").exists()  # nothing trained


# ---------------------------------------------------------------------------
# Many processes: 2 processes x 1 CPU device == 1 process x 2 devices, same global batch
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore_params(ckpt: Path) -> dict[str, np.ndarray]:
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as c:
        meta = c.metadata(ckpt.absolute())
        meta = getattr(meta, "item_metadata", meta)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), meta)
        tree = c.restore(ckpt.absolute(), target)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_two_devices(tmp_path, toy_dataset):
    """The autoencoder stage (whose loss does not depend on the order of the batch's rows) for 3 steps of a
    global batch of 8: per-step losses and the saved parameters agree; each process read its own shard."""
    steps = ["batch_size=8", "steps=3", "warmup=0", "log_every=1", "eval_every=3", "checkpoint_every=3",
             "eval_batches=1"]  # fmt: skip

    def sets(runs: Path) -> list[str]:
        return [f"data.dataset={toy_dataset}", *TINY, f"train_autoencoder.runs_dir={runs}",
                *(f"train_autoencoder.{s}" for s in steps)]  # fmt: skip

    base = ["train", "autoencoder", "--config", "configs/toy.toml"]
    port = _free_port()
    procs = {
        "one": subprocess.Popen(
            _cli(base, sets(tmp_path / "one")), cwd=ROOT, env=_env(tmp_path, devices=2),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ),
        **{
            f"p{i}": subprocess.Popen(
                _cli([*base, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                     sets(tmp_path / "two")),
                cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for i in range(2)
        },
    }  # fmt: skip
    outs = {}
    try:
        for name, p in procs.items():
            outs[name], _ = p.communicate(timeout=300)
    finally:
        for p in procs.values():
            p.kill()
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n{outs[name]}"
    assert '"step": 3' in outs["p0"] and '"step": 3' not in outs["p1"]  # one process reports

    def losses(runs: Path) -> list[float]:
        log = runs / "toy" / "autoencoder" / "logs" / "metrics.jsonl"
        return [r["loss"] for r in map(json.loads, log.open()) if "loss" in r]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == 3 and len(two) == 3  # written once, by process 0
    np.testing.assert_allclose(two, one, rtol=2e-5)
    assert one[0] != one[2]  # it trained

    p_one = _restore_params(tmp_path / "one" / "toy" / "autoencoder" / "checkpoints" / "3" / "params")
    p_two = _restore_params(tmp_path / "two" / "toy" / "autoencoder" / "checkpoints" / "3" / "params")
    assert p_one.keys() == p_two.keys() and len(p_one) >= 4
    for k in p_one:
        np.testing.assert_allclose(p_two[k], p_one[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_learning_curves_are_plotted_against_wall_clock_hours(tmp_path, capsys):
    """The curves tool reads both stages' logs (lines without elapsed_s get it from their time) and puts the
    dynamics evaluations after the autoencoder's hours."""
    from worldplay.train.curves import main as curves_main
    from worldplay.train.curves import read_log

    runs = tmp_path / "runs"
    ae_log = runs / "toy" / "autoencoder" / "logs" / "metrics.jsonl"
    dyn_log = runs / "toy" / "dynamics" / "logs" / "metrics.jsonl"
    for log in (ae_log, dyn_log):
        log.parent.mkdir(parents=True)
    ae_log.write_text("".join(json.dumps({"step": s, "time": 1000.0 + 1800 * s, "loss": 1.0}) + "\n" for s in (1, 2)))
    scores = {"psnr_h1": 25.0, "delta_psnr_h4": 0.5, "psnr_h4": 22.0}
    dyn_log.write_text(
        "".join(json.dumps({"step": s, "time": 0.0, "elapsed_s": 900.0 * s, "eval": scores}) + "\n" for s in (1, 2))
    )
    evals, total = read_log(ae_log)
    assert evals == [] and total == 1800.0
    out = tmp_path / "curves.png"
    sets = [f"train_{s}.runs_dir={runs}" for s in ("autoencoder", "dynamics", "reward", "decoder")]
    argv = ["--config", str(ROOT / "configs" / "toy.toml"), *(a for s in sets for a in ("--set", s)), "--out", str(out)]
    assert curves_main(argv) == 0
    assert out.stat().st_size > 1000
    table = capsys.readouterr().out
    assert "| 1 | 0.75 | 25.00 |" in table and "| 2 | 1.00 | 25.00 |" in table  # (1800 + 900 s) / 3600 h
    assert "decoder stage" not in table  # no decoder run: no such series

    # a decoder stage after the dynamics (1,800 s) and reward (360 s) stages: its points after their hours
    for stage, rows in (("reward", [{"step": 5, "time": 0.0, "elapsed_s": 360.0, "loss": 1.0}]),
                        ("decoder", [{"step": 3, "time": 0.0, "elapsed_s": 1440.0,
                                      "eval": {"psnr_h1": 28.5, "psnr_encoded": 31.0}}])):  # fmt: skip
        log = runs / "toy" / stage / "logs" / "metrics.jsonl"
        log.parent.mkdir(parents=True)
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert curves_main(argv) == 0
    table = capsys.readouterr().out
    assert "| 3 | 1.50 | 28.50 | 31.00 |" in table.split("decoder stage")[1]  # (1800 + 1800 + 360 + 1440 s) / 3600 h


def test_decoder_stage_without_a_world_says_which_stage_comes_first(tmp_path, toy_dataset):
    from worldplay.errors import WorldplayError
    from worldplay.train.decoder import train_decoder

    cfg = load_config(ROOT / "configs" / "toy.toml", _sets(toy_dataset, tmp_path / "runs"))
    with pytest.raises(WorldplayError, match=r"dynamics/world: no world to fine-tune the decoder of; train the dyn"):
        train_decoder(cfg, progress=False)
    assert not (tmp_path / "runs" / "toy" / "decoder").exists()  # nothing written before the refusal


@pytest.mark.parametrize("stage", ["autoencoder", "dynamics", "reward", "rate", "decoder", "idm"])
def test_train_runs_the_named_stage_with_the_world_it_was_given(stage, monkeypatch, capsys):
    """`worldplay train STAGE [--world W]` calls that stage's trainer, with W resolved (a shipped name here) for
    the stages that take one."""
    import importlib

    from worldplay.checkpoint import resolve_world
    from worldplay.cli import WORLD_STAGES, main

    calls = []
    module = importlib.import_module(f"worldplay.train.{stage}")
    monkeypatch.setattr(module, f"train_{stage}", lambda cfg, **kw: calls.append(kw) or {"stage": stage})
    assert main(["train", stage, "--config", "configs/toy.toml", "--quiet"]) == 0
    if stage in WORLD_STAGES:
        assert main(["train", stage, "--config", "configs/toy.toml", "--quiet", "--world", "boxing"]) == 0
        assert calls == [{"progress": False, "world": None}, {"progress": False, "world": resolve_world("boxing")}]
    else:
        assert calls == [{"progress": False}]
    assert f'"stage": "{stage}"' in capsys.readouterr().out  # what the trainer returned, printed
