"""The reward and episode-end model: what the last step scored, and whether the game is over.

It reads the latents of the last ``frames`` frames, the newest one included (the one the
action just produced: a point shows in the score of the frame after the punch), and the
action that produced the newest frame:

    logits_B3, end_logit_B = model(z_BFhwC, actions_B)   # F frames, oldest first

Rewards are sparse and signed, so the reward is a class per sign (negative, none,
positive); a class's value is the mean recorded reward of that sign, stored with the
model. ``end`` says that the newest frame is the episode's last one (the dataset marks the
last recorded frame of a game that ended).

Dimension keys: B batch, F frames, h, w latent grid, C latent channels, D width.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay.config import RewardConfig

NEG, NONE, POS = 0, 1, 2  # reward classes


def reward_class(rewards: np.ndarray) -> np.ndarray:
    """Recorded rewards -> class per sign (int32: 0 negative, 1 none, 2 positive)."""
    r = np.asarray(rewards)
    return np.where(r < 0, NEG, np.where(r > 0, POS, NONE)).astype(np.int32)


class RewardModel(nnx.Module):
    """Two convolutions over the stacked latent frames and their differences, then an MLP with the action's
    embedding. The convolution features reach the MLP both pooled over the grid (an event anywhere: a ball
    that vanished) and in place (where it happened: whose score changed)."""

    def __init__(self, config: RewardConfig, latent_shape: tuple[int, int, int], num_actions: int, *, rngs: nnx.Rngs):
        h, w, C = latent_shape
        D = config.width
        self.config = config
        self.latent_shape = (h, w, C)
        self.num_actions = num_actions
        self.conv1 = nnx.Conv((2 * config.frames - 1) * C, D, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(D, 2 * D, (3, 3), strides=(2, 2), rngs=rngs)
        flat = 2 * D * ((h + 1) // 2) * ((w + 1) // 2)
        self.proj = nnx.Linear(flat + 4 * D, 4 * D, rngs=rngs)
        self.action_embed = nnx.Embed(num_actions, 4 * D, rngs=rngs)
        self.hidden = nnx.Linear(4 * D, 4 * D, rngs=rngs)
        self.out = nnx.Linear(4 * D, 4, rngs=rngs)  # 3 reward classes and the end logit

    def __call__(self, z_BFhwC: jax.Array, actions_B: jax.Array) -> tuple[jax.Array, jax.Array]:
        """-> (reward class logits [B, 3], end logit [B])."""
        B, F, h, w, C = z_BFhwC.shape
        z = jnp.concatenate([z_BFhwC, jnp.diff(z_BFhwC, axis=1)], axis=1)  # frames and what changed between them
        x = jnp.moveaxis(z, 1, 3).reshape(B, h, w, (2 * F - 1) * C)  # stacked on channels
        x = nnx.silu(self.conv1(x))
        x = nnx.silu(self.conv2(x))
        pooled = jnp.concatenate([x.max(axis=(1, 2)), x.mean(axis=(1, 2))], axis=-1)
        x = self.proj(jnp.concatenate([x.reshape(B, -1), pooled], axis=-1)) + self.action_embed(actions_B)
        x = self.out(nnx.silu(self.hidden(nnx.silu(x))))
        return x[:, :3], x[:, 3]


@dataclasses.dataclass(frozen=True)
class RewardHead:
    """A trained reward model as a world runs it: the module and the value of each reward class."""

    model: RewardModel
    class_values: tuple[float, float, float]  # reward of the negative, none and positive classes

    @property
    def frames(self) -> int:
        return self.model.config.frames


def predict(
    model: RewardModel, values_3: jax.Array, z_BFhwC: jax.Array, actions_B: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Most likely reward (the value of the argmax class) [B] and episode end [B] bool."""
    logits, end_logit = model(z_BFhwC, actions_B)
    return values_3[jnp.argmax(logits, axis=-1)], end_logit > 0
