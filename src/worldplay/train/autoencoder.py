"""The autoencoder stage: reconstruct single frames; report held-out PSNR and SSIM.

Frames are drawn as windows of one frame (``train_autoencoder.batch_size`` frames a step).
Loss: L1 + MSE in [-1, 1] pixel space. With ``autoencoder.motion_weight`` above 0 the windows are of two
frames, the second is reconstructed, and its loss is weighted towards the pixels that changed since the
first (``diffusion.motion_weights``): small sprites that move, which a plain loss gives up for the
background. Per-channel latent statistics (mean, std) over held-out frames are stored with every checkpoint
so the dynamics model can see unit-scale latents.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay.config import Config
from worldplay.diffusion import motion_weights
from worldplay.metrics import image_grid, psnr, ssim
from worldplay.models.autoencoder import Autoencoder, frames_to_unit


def _reconstruction_loss(
    recon: jax.Array, target: jax.Array, weights_BHW: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """(L1, MSE) between images [B, H, W, 3] in [-1, 1], optionally weighted per pixel (weights of mean 1)."""
    w = 1.0 if weights_BHW is None else weights_BHW[..., None]
    return jnp.mean(w * jnp.abs(recon - target)), jnp.mean(w * (recon - target) ** 2)


@nnx.jit
def _encode(model: Autoencoder, frames: jax.Array) -> jax.Array:
    return model.encode(frames)


@nnx.jit
def _decode(model: Autoencoder, z: jax.Array) -> jax.Array:
    return model.decode(z)


class AutoencoderStage:
    name = "autoencoder"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._latent_stats: dict[str, list[float]] = {}
        # frames per loader element: single frames, or the frame before too for the motion-weighted loss
        self.window = 2 if cfg.autoencoder.motion_weight > 0 else 1

    def build(self, rngs: nnx.Rngs) -> Autoencoder:
        return Autoencoder(self.cfg.autoencoder, rngs=rngs)

    def batch(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        f = raw["frames"]  # [B, T, H, W, 3]
        if self.window == 2:
            return {"frames": f[:, 1], "previous": f[:, 0]}
        return {"frames": f.reshape(-1, *f.shape[2:])}

    def loss(self, model: Autoencoder, batch: dict[str, jax.Array], key: jax.Array):
        target = frames_to_unit(batch["frames"])
        weights = None
        if "previous" in batch:
            pair = jnp.stack([frames_to_unit(batch["previous"]), target], axis=1)  # [B, 2, H, W, 3]
            weights = motion_weights(pair, self.cfg.autoencoder.motion_weight)[:, 1]
        l1, mse = _reconstruction_loss(model(batch["frames"]), target, weights)
        return l1 + mse, {"l1": l1, "mse": mse}

    def evaluate(self, model: Autoencoder, batches: list[dict[str, np.ndarray]]):
        frames = np.concatenate([self.batch(b)["frames"] for b in batches])
        z = _encode(model, jnp.asarray(frames))  # jitted once per module, not per evaluation
        recon = np.asarray(_decode(model, z))
        zf = np.asarray(z).reshape(-1, z.shape[-1])
        self._latent_stats = {"latent_mean": zf.mean(0).tolist(), "latent_std": (zf.std(0) + 1e-6).tolist()}
        p = np.asarray(psnr(frames, recon))
        s = np.asarray(ssim(frames, recon))
        l1, mse = _reconstruction_loss(frames_to_unit(jnp.asarray(recon)), frames_to_unit(jnp.asarray(frames)))
        eval_loss = float(l1 + mse)
        n = min(8, len(frames))
        images = {"reconstructions": image_grid([frames[:n], recon[:n]])}
        return {"eval_loss": eval_loss, "psnr": float(p.mean()), "ssim": float(s.mean())}, images

    def extras(self, model: Autoencoder) -> dict[str, Any]:
        return dict(self._latent_stats)

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        s = self.cfg.autoencoder.frame_size
        return {"frames": np.random.default_rng(0).integers(0, 256, (batch_size, s, s, 3), dtype=np.uint8)}


def train_autoencoder(cfg: Config, *, progress: bool = True, later_s: float | None = None) -> dict[str, Any]:
    """Train (or resume) the autoencoder of ``cfg`` on ``cfg.data.dataset``.

    ``later_s``: projected seconds of the stages after this one (for the progress bar's ETA).
    """
    from worldplay.data.format import open_dataset
    from worldplay.train.loop import loaders, preflight, train

    preflight(cfg, "autoencoder")
    stage = AutoencoderStage(cfg)
    train_iter, eval_batches = loaders(cfg, "autoencoder", stage.window, dataset=open_dataset(cfg.data.dataset))
    return train(stage, cfg, train_iter, eval_batches, progress=progress, later_s=later_s)
