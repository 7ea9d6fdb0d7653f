"""The reward and episode-end model: what the last step scored, and whether the game is over.

It reads the latents of the last ``frames`` frames, the newest one included (the one the
action just produced: a point shows in the score of the frame after the punch), and the
action that produced the newest frame:

    logits_B3, end_logit_B = model(z_BFhwC, actions_B)   # F frames, oldest first

Rewards are sparse and signed, so the reward is a class per sign (negative, none,
positive); a class's value is the mean recorded reward of that sign, stored with the
model. ``end`` says that the newest frame is the episode's last one (the dataset marks the
last recorded frame of a game that ended).

With ``lag`` L > 0 the model reads L frames past the outcome's: the action is the one that
produced the frame L before the newest, and a world reports its reward L steps late. What
a point does to the frames (the boxer knocked back, the score redrawn) shows over the
frames after it, which is the view a model needs where the autoencoder blurs the score.

A reward event seen on one frame is often seen again on the next. A world reports an event
of a sign only where the model did not predict that sign on any of the ``refractory``
steps before (:func:`report`); ``refractory`` is measured on the training episodes: the
shortest gap between two events of one sign there, less one, and at most ``frames - 1``.

Dimension keys: B batch, F frames, h, w latent grid, C latent channels, D width.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay.config import RateConfig, RewardConfig

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
        x = self.head(self.features(z_BFhwC) + self.action_embed(actions_B))
        return x[:, :3], x[:, 3]

    def features(self, z_BFhwC: jax.Array) -> jax.Array:
        """The frames' features [B, 4 D], before any action is added."""
        B, F, h, w, C = z_BFhwC.shape
        z = jnp.concatenate([z_BFhwC, jnp.diff(z_BFhwC, axis=1)], axis=1)  # frames and what changed between them
        x = jnp.moveaxis(z, 1, 3).reshape(B, h, w, (2 * F - 1) * C)  # stacked on channels
        x = nnx.silu(self.conv1(x))
        x = nnx.silu(self.conv2(x))
        pooled = jnp.concatenate([x.max(axis=(1, 2)), x.mean(axis=(1, 2))], axis=-1)
        return self.proj(jnp.concatenate([x.reshape(B, -1), pooled], axis=-1))

    def head(self, x_BD: jax.Array) -> jax.Array:
        return self.out(nnx.silu(self.hidden(nnx.silu(x_BD))))


class RateModel(RewardModel):
    """The expected reward of a step, from the frames ``lag`` steps before it and the keys pressed since.

    Where the event model reads a point off the frames, this one predicts it: the share of negative, none and
    positive rewards over the ``horizon`` steps from the step, given ``frames`` latent frames ending ``lag``
    frames before the step's frame and the last ``keys`` actions (the step's own last), one embedding per
    position. A world's frames need not draw the point for this model to score it; what a policy does (the keys,
    and where its player stands) is enough. ``expected_rate`` turns the shares into an expected reward per step:

        logits_B3 = model(z_BFhwC, actions_BK)   # F frames, K actions; oldest first
    """

    def __init__(self, config: RateConfig, latent_shape: tuple[int, int, int], num_actions: int, *, rngs: nnx.Rngs):
        base = RewardConfig(frames=config.frames, width=config.width, augment_noise=config.augment_noise)
        super().__init__(base, latent_shape, num_actions, rngs=rngs)
        self.rate_config = config
        self.key_embeds = nnx.List(
            [nnx.Embed(num_actions, 4 * config.width, rngs=rngs) for _ in range(config.keys - 1)]
        )  # the older keys' positions; the step's own key is ``action_embed``

    def __call__(self, z_BFhwC: jax.Array, actions_BK: jax.Array) -> jax.Array:  # type: ignore[override]
        """-> reward class logits [B, 3] (of the shares over the horizon)."""
        x = self.features(z_BFhwC) + self.action_embed(actions_BK[:, -1])
        for k, embed in enumerate(self.key_embeds):
            x = x + embed(actions_BK[:, k])
        return self.head(x)[:, :3]


def rate_targets(rewards_BH: np.ndarray) -> np.ndarray:
    """Rewards of the ``horizon`` steps from each step [B, H] -> the share of each reward class [B, 3]."""
    cls = reward_class(rewards_BH)
    return np.stack([(cls == c).mean(axis=1) for c in (NEG, NONE, POS)], axis=1).astype(np.float32)


def expected_rate(model: RateModel, values_3: jax.Array, z_BFhwC: jax.Array, actions_BK: jax.Array) -> jax.Array:
    """The expected reward of each step [B]: the class shares the model predicts, times the classes' values."""
    return jax.nn.softmax(model(z_BFhwC, actions_BK), axis=-1) @ values_3


@dataclasses.dataclass(frozen=True)
class RewardHead:
    """A trained reward model as a world runs it: the module and the value of each reward class."""

    model: RewardModel
    class_values: tuple[float, float, float]  # reward of the negative, none and positive classes
    refractory: tuple[int, int] = (0, 0)  # steps after a predicted negative / positive event not reported again

    @property
    def frames(self) -> int:
        return self.model.config.frames

    @property
    def lag(self) -> int:
        return self.model.config.lag


@dataclasses.dataclass(frozen=True)
class RateHead:
    """A trained rate model as a world runs it: the module and the value of each reward class."""

    model: RateModel
    class_values: tuple[float, float, float]

    @property
    def config(self) -> RateConfig:
        return self.model.rate_config


def refractory_steps(rewards: list[np.ndarray], frames: int) -> tuple[int, int]:
    """Per sign (negative, positive): the shortest gap between two events of that sign in any of the episodes'
    reward series, less one, at most ``frames - 1`` (an event stays in the model's view that long); 0 for a sign
    with fewer than two events in an episode."""
    out = []
    for test in (np.less, np.greater):
        gaps = [np.diff(np.flatnonzero(test(r, 0))) for r in rewards]
        gaps = [int(g.min()) for g in gaps if g.size]
        out.append(min(min(gaps) - 1, frames - 1) if gaps else 0)
    return out[0], out[1]


def report(reward_B: jax.Array, since_B2: jax.Array, refractory_2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Predicted rewards of one step [B] -> those reported: an event of a sign is reported unless the model
    predicted that sign within the last ``refractory`` steps. ``since`` [B, 2] counts the steps since the last
    prediction of each sign (negative, positive), as of the step before; returns the rewards and the new count."""
    since = since_B2 + 1
    sign = jnp.stack([reward_B < 0, reward_B > 0], axis=-1)  # [B, 2]
    blocked = jnp.any(sign & (since <= refractory_2), axis=-1)
    return jnp.where(blocked, 0.0, reward_B), jnp.where(sign, 0, since)


def report_series(rewards_T: np.ndarray, refractory: tuple[int, int]) -> np.ndarray:
    """:func:`report` along one stream's predicted rewards [T], from a start (nothing predicted before)."""
    T = len(rewards_T)
    padded = np.zeros(-(-max(T, 1) // 1024) * 1024, np.float32)  # a few lengths, one compile each; the scan is causal
    padded[:T] = rewards_T
    return np.asarray(_scan_report(jnp.asarray(padded), jnp.asarray(refractory, jnp.int32)))[:T]


@jax.jit
def _scan_report(rewards_T: jax.Array, refractory_2: jax.Array) -> jax.Array:
    def one(since, r):
        out, since = report(r[None], since, refractory_2)
        return since, out[0]

    return jax.lax.scan(one, jnp.full((1, 2), SINCE_START, jnp.int32), rewards_T)[1]


SINCE_START = 1 << 20  # ``since`` of a stream that has predicted nothing yet


def predict(
    model: RewardModel, values_3: jax.Array, z_BFhwC: jax.Array, actions_B: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Most likely reward (the value of the argmax class) [B] and episode end [B] bool."""
    logits, end_logit = model(z_BFhwC, actions_B)
    return values_3[jnp.argmax(logits, axis=-1)], end_logit > 0
