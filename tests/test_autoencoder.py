"""The autoencoder, the image metrics and the shared training loop on the toy world."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from worldplay.cli import main
from worldplay.config import AutoencoderConfig
from worldplay.metrics import PSNR_CAP_DB, psnr, ssim
from worldplay.models.autoencoder import Autoencoder


def test_metrics_on_known_cases():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(psnr(a, a), [PSNR_CAP_DB, PSNR_CAP_DB])  # identical: capped, not inf
    np.testing.assert_allclose(ssim(a, a), [1.0, 1.0], atol=1e-5)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)  # a known shift
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(psnr(a, b), 10 * np.log10(255**2 / mse), rtol=1e-5)
    noise = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert (ssim(a, noise) < 0.9).all() and (ssim(a, b) > ssim(a, noise)).all()


def test_shapes_and_per_frame_encoding():
    cfg = AutoencoderConfig(channels=(8, 16, 16), latent_channels=4)
    model = Autoencoder(cfg, rngs=nnx.Rngs(0))
    frames = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    z = model.encode(frames)
    assert z.shape == (3, *cfg.latent_shape) == (3, 8, 8, 4)
    out = model.decode(z)
    assert out.shape == (3, 64, 64, 3) and out.dtype == jnp.uint8
    # per frame: a frame's latent does not depend on the other frames in the batch
    np.testing.assert_allclose(model.encode(frames[:1]), z[:1], atol=1e-5)


@pytest.mark.slow
def test_training_learns_and_resumes(tmp_path, fresh_toy_dataset, capsys, optimised):
    """A tiny autoencoder trained for a few dozen steps beats its untrained self; a rerun resumes."""
    sets = [
        f"data.dataset={fresh_toy_dataset}", "data.holdout=0.25", f"train_autoencoder.runs_dir={tmp_path / 'runs'}",
        "autoencoder.channels=[16, 32, 32]", "autoencoder.blocks=1", "train_autoencoder.batch_size=16",
        "train_autoencoder.warmup=5",
        "train_autoencoder.lr=3e-3", "train_autoencoder.log_every=10", "train_autoencoder.eval_every=20",
        "train_autoencoder.checkpoint_every=20", "train_autoencoder.eval_batches=2",
    ]  # fmt: skip

    def run(*extra):
        argv = ["train", "autoencoder", "--config", "configs/toy.toml", "--quiet"]
        for item in [*sets, *extra]:
            argv += ["--set", item]
        assert main(argv) == 0
        out = capsys.readouterr()
        return json.loads(out.out[out.out.index("{") :]), out.out + out.err

    base = f"train_autoencoder.runs_dir={tmp_path / 'base'}"
    untrained, _ = run("train_autoencoder.steps=1", "train_autoencoder.warmup=0", base)
    first, _ = run("train_autoencoder.steps=40")
    trained, log = run("train_autoencoder.steps=80")
    assert "from step 40" in log  # the second command resumed the first run
    assert trained["psnr"] > untrained["psnr"] + 5, (untrained, first, trained)
    ckpts = sorted(p.name for p in (tmp_path / "runs" / "toy" / "autoencoder" / "checkpoints").iterdir())
    assert "80" in ckpts
    meta = json.loads(
        (tmp_path / "runs" / "toy" / "autoencoder" / "checkpoints" / "80" / "meta" / "metadata").read_text()
    )
    assert meta["step"] == 80 and len(meta["latent_mean"]) == 16
    assert jax.device_count() >= 1


def test_the_motion_weighted_loss_counts_errors_where_the_frame_changed_more():
    """autoencoder.motion_weight: windows of two frames, the second reconstructed with its loss moved towards
    the pixels that changed since the first; a still frame keeps the plain loss."""
    from worldplay.config import load_config
    from worldplay.train.autoencoder import AutoencoderStage, _reconstruction_loss

    plain = AutoencoderStage(load_config("configs/toy.toml"))
    weighted = AutoencoderStage(load_config("configs/toy.toml", ["autoencoder.motion_weight=4"]))
    assert plain.window == 1 and weighted.window == 2
    frames = np.zeros((2, 2, 64, 64, 3), np.uint8)
    frames[0, 1, 10:14, 10:14] = 255  # a sprite appears in the first window's second frame
    batch = weighted.batch({"frames": frames})
    assert batch["frames"].shape == batch["previous"].shape == (2, 64, 64, 3)

    class Blank(nnx.Module):  # reconstructs every frame as black
        def __call__(self, f):
            return -jnp.ones(f.shape, jnp.float32)

    loss_w, _ = weighted.loss(Blank(), jax.tree.map(jnp.asarray, batch), jax.random.key(0))
    loss_p, _ = plain.loss(Blank(), {"frames": jnp.asarray(batch["frames"])}, jax.random.key(0))
    assert float(loss_w) > 2 * float(loss_p)  # the missed sprite is what changed: it weighs more
    with pytest.raises(ValueError, match=r"autoencoder\.motion_weight"):
        load_config("configs/toy.toml", ["autoencoder.motion_weight=-1"])
    # weights of mean 1 leave a uniform error as it was
    target = jnp.zeros((1, 8, 8, 3))
    w = jnp.ones((1, 8, 8)).at[0, 0, 0].set(10.0)
    w = w / w.mean()
    uniform = _reconstruction_loss(target + 0.5, target)
    np.testing.assert_allclose(_reconstruction_loss(target + 0.5, target, w), uniform, rtol=1e-5)


@pytest.mark.slow
def test_autoencoder_eval_reports_psnr_where_the_frame_changed(tmp_path, toy_autoencoder_run):
    """`worldplay eval` of an autoencoder run also scores the pixels that changed since the previous frame."""
    from worldplay.evaluate import evaluate_autoencoder

    run = toy_autoencoder_run["run"]
    r = evaluate_autoencoder(run, toy_autoencoder_run["dataset"], tmp_path / "ae", frames_per_episode=64)
    assert 0 < r["moving_share"] < 1  # the toy's ball, player and scrolling background move
    # moving pixels are the hard ones: edges of sprites and stripes
    assert r["psnr_moving"]["mean"] < r["psnr"]["mean"], r
