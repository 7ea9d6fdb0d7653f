"""The per-frame video autoencoder: frame [H, W, 3] uint8 <-> continuous latent grid [h, w, C].

Per-frame and therefore causal: a frame is encoded the moment it exists, from
itself alone. Convolutional, with one stride-2 step per level and residual blocks
at the reduced resolutions only (full-resolution convolutions dominate CPU cost).
Latents are continuous (no quantiser): the dynamics model is a diffusion model.

Dimension keys: B batch, H W frame height and width, h w latent grid, C channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from worldplay.config import AutoencoderConfig


def frames_to_unit(frames_BHWC: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return frames_BHWC.astype(jnp.float32) / 127.5 - 1.0


def unit_to_frames(x_BHWC: jax.Array) -> jax.Array:
    """float [-1, 1] -> uint8 [0, 255], rounded and clipped."""
    return jnp.clip(jnp.round((x_BHWC + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


class ResBlock(nnx.Module):
    """x + conv(silu(conv(silu(x)))); the second conv starts at zero so each block starts as identity."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, (3, 3), kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.conv2(nnx.silu(self.conv1(nnx.silu(x))))


class Encoder(nnx.Module):
    def __init__(self, config: AutoencoderConfig, *, rngs: nnx.Rngs):
        chans = config.channels
        self.downs = nnx.List(
            [nnx.Conv(3 if i == 0 else chans[i - 1], c, (3, 3), strides=(2, 2), rngs=rngs) for i, c in enumerate(chans)]
        )
        self.blocks = nnx.List([nnx.List([ResBlock(c, rngs=rngs) for _ in range(config.blocks)]) for c in chans])
        self.out = nnx.Conv(chans[-1], config.latent_channels, (1, 1), rngs=rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        x = x_BHWC
        for i, (down, blocks) in enumerate(zip(self.downs, self.blocks, strict=True)):
            x = down(x if i == 0 else nnx.silu(x))
            for block in blocks:
                x = block(x)
        return self.out(nnx.silu(x))  # [B, h, w, C]


class Decoder(nnx.Module):
    def __init__(self, config: AutoencoderConfig, *, rngs: nnx.Rngs):
        chans = config.channels[::-1]
        self.inp = nnx.Conv(config.latent_channels, chans[0], (1, 1), rngs=rngs)
        self.blocks = nnx.List([nnx.List([ResBlock(c, rngs=rngs) for _ in range(config.blocks)]) for c in chans])
        self.ups = nnx.List(
            [nnx.Conv(c, chans[i + 1] if i + 1 < len(chans) else 3, (3, 3), rngs=rngs) for i, c in enumerate(chans)]
        )

    def __call__(self, z_BhwC: jax.Array) -> jax.Array:
        x = self.inp(z_BhwC)
        for blocks, up in zip(self.blocks, self.ups, strict=True):
            for block in blocks:
                x = block(x)
            B, h, w, C = x.shape
            x = jax.image.resize(nnx.silu(x), (B, 2 * h, 2 * w, C), method="nearest")
            x = up(x)
        return x  # [B, H, W, 3] in about [-1, 1]


class Autoencoder(nnx.Module):
    """``encode(frames uint8 [B, H, W, 3]) -> latents [B, h, w, C]``; ``decode`` back to uint8."""

    def __init__(self, config: AutoencoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)

    def encode(self, frames_BHWC: jax.Array) -> jax.Array:
        return self.encoder(frames_to_unit(frames_BHWC))

    def decode_unit(self, z_BhwC: jax.Array) -> jax.Array:
        """Latents -> frames as floats in [-1, 1] (for losses)."""
        return self.decoder(z_BhwC)

    def decode(self, z_BhwC: jax.Array) -> jax.Array:
        """Latents -> frames uint8 [B, H, W, 3]."""
        return unit_to_frames(self.decoder(z_BhwC))

    def __call__(self, frames_BHWC: jax.Array) -> jax.Array:
        """Reconstruction in [-1, 1]."""
        return self.decode_unit(self.encode(frames_BHWC))
