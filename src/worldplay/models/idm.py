"""The inverse-dynamics model (IDM): which action turned frame t into frame t + 1?

It reads raw frames, not a world's latents, so it labels any video of the game and scores any
world's rollouts:

    logits_BA = model(frames_BFHWC)   # F = before + 2 frames, t - before ... t + 1, uint8 or [0, 255]

The frames and the differences between neighbours are stacked on channels and go through
stride-2 convolutions; the features, flattened (where something moved matters: the player's
sprite, not the opponent's), go through an MLP to one logit per action.

Dimension keys: B batch, F frames, H, W, C frame, A actions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from worldplay.config import IdmConfig


class InverseDynamics(nnx.Module):
    def __init__(self, config: IdmConfig, frame_shape: tuple[int, int, int], num_actions: int, *, rngs: nnx.Rngs):
        H, W, C = frame_shape
        self.config = config
        self.frame_shape = (H, W, C)
        self.num_actions = num_actions
        cin = (2 * config.frames - 1) * C
        convs = []
        for cout in config.channels:
            convs.append(nnx.Conv(cin, cout, (3, 3), strides=(2, 2), rngs=rngs))
            cin = cout
            H, W = (H + 1) // 2, (W + 1) // 2
        self.convs = nnx.List(convs)
        self.hidden = nnx.Linear(H * W * cin, config.hidden, rngs=rngs)
        self.out = nnx.Linear(config.hidden, num_actions, rngs=rngs)

    def __call__(self, frames_BFHWC: jax.Array) -> jax.Array:
        """-> action logits [B, A]."""
        B, F, H, W, C = frames_BFHWC.shape
        x = frames_BFHWC.astype(jnp.float32) / 127.5 - 1.0
        x = jnp.concatenate([x, 4.0 * jnp.diff(x, axis=1)], axis=1)  # frames and what changed, amplified
        x = jnp.moveaxis(x, 1, 3).reshape(B, H, W, (2 * F - 1) * C)
        for conv in self.convs:
            x = nnx.silu(conv(x))
        return self.out(nnx.silu(self.hidden(x.reshape(B, -1))))
