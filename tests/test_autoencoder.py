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
def test_training_learns_and_resumes(tmp_path, fresh_toy_dataset, capsys):
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
