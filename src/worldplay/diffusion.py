"""Flow matching with x0-prediction, few-step Euler sampling and classifier-free guidance (pure functions).

A noise level t in [0, 1] mixes clean latents and Gaussian noise on a straight
line, ``x_t = (1 - t) x0 + t eps``: t = 0 is clean, t = 1 is pure noise. The model
predicts x0; an Euler step of the flow from t to t' < 0 uses the implied noise
``eps = (x_t - (1 - t) x0) / t``, so ``x_t' = (1 - t') x0 + t' eps`` and the last step
(t' = 0) returns the prediction itself.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def add_noise(x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """``(1 - t) x0 + t eps``; ``t`` broadcasts against ``x0``."""
    return (1.0 - t) * x0 + t * eps


def time_grid(steps: int) -> jax.Array:
    """Noise levels visited by the sampler: ``steps + 1`` values from 1 down to 0."""
    return jnp.linspace(1.0, 0.0, steps + 1)


def euler_step(x_t: jax.Array, x0_pred: jax.Array, t: jax.Array, t_next: jax.Array) -> jax.Array:
    """One Euler step of the flow from level ``t`` (> 0) to ``t_next`` given the predicted x0."""
    eps_pred = (x_t - (1.0 - t) * x0_pred) / t
    return add_noise(x0_pred, eps_pred, t_next)


def guide(x0_cond: jax.Array, x0_uncond: jax.Array, scale: jax.Array | float) -> jax.Array:
    """Classifier-free guidance: scale 1 is exactly the conditional prediction, 0 the unconditional one."""
    return (1.0 - scale) * x0_uncond + scale * x0_cond


def sample_levels(
    key: jax.Array, shape: tuple[int, ...], context_noise: float, clean_prob: float, power: float = 1.0
) -> jax.Array:
    """Per-frame training noise levels (diffusion forcing).

    With probability ``clean_prob`` a frame gets a low, context-like level drawn
    uniformly from [0, 2 * context_noise]; otherwise a level in [0, 1] drawn with density
    ``(power + 1) t^power`` (``power`` 1: density 2t). Every frame is then a denoising target given whatever
    its past looks like, and the model sees histories as slightly noisy as those it gets at sampling.
    """
    k_mix, k_low, k_any = jax.random.split(key, 3)
    low = jax.random.uniform(k_low, shape, maxval=min(1.0, 2.0 * context_noise))
    # high levels, where the next frame must be predicted rather than cleaned up, and where the sampler
    # spends its first and decisive step (a one-step sampler: its only one), are drawn more often
    u = jax.random.uniform(k_any, shape)
    anywhere = jnp.sqrt(u) if power == 1.0 else u ** (1.0 / (power + 1.0))
    return jnp.where(jax.random.bernoulli(k_mix, clean_prob, shape), low, anywhere)


def drop_actions(key: jax.Array, actions: jax.Array, null_action: int, prob: float) -> jax.Array:
    """Replace each action by the null action with probability ``prob`` (trains the unconditional model)."""
    return jnp.where(jax.random.bernoulli(key, prob, actions.shape), null_action, actions)


def previous_actions(actions_BT: jax.Array, null_action: int) -> jax.Array:
    """The action that led to each frame: ``actions[t - 1]``, and the null action for the first frame."""
    first = jnp.full_like(actions_BT[:, :1], null_action)
    return jnp.concatenate([first, actions_BT[:, :-1]], axis=1)


def own_context(
    denoise: Callable[[jax.Array, jax.Array], jax.Array],
    z_BThwC: jax.Array,
    key: jax.Array,
    prob: float,
    context_level: float,
) -> jax.Array:
    """Clean latents with some frames replaced by the model's own one-step predictions of them (no gradient).

    Each frame but the first is picked with probability ``prob``. One pass of ``denoise(z_t, t)`` (the model,
    with the recorded actions) sees the picked frames as pure noise (t = 1) and the others at ``context_level``,
    the noise a world gives its context: for a picked frame whose past was not picked, its output is what a
    one-step sampler at guidance 1 draws after the real past. Those outputs replace the picked frames. Training then
    noises this window as usual and keeps the recorded latents as targets, so the frames after a picked one
    learn to read the model's own blur and still predict the real next frame: the error a rollout feeds back
    into its context, which clean or slightly noised recorded context never shows.
    """
    k_pick, k_eps = jax.random.split(key)
    B, T = z_BThwC.shape[:2]
    picked = jax.random.bernoulli(k_pick, prob, (B, T)) & (jnp.arange(T) > 0)
    t = jnp.where(picked, 1.0, context_level)
    z_t = add_noise(z_BThwC, jax.random.normal(k_eps, z_BThwC.shape), t[..., None, None, None])
    own = jax.lax.stop_gradient(denoise(z_t, t))
    return jnp.where(picked[..., None, None, None], own, z_BThwC)


def motion_weights(
    z_BThwC: jax.Array, strength: float, background_hwC: jax.Array | None = None, sprite: float = 0.0
) -> jax.Array:
    """Per-position loss weights [B, T, h, w] that favour where a frame changed since the one before.

    ``1 + strength * change / mean(change)`` with ``change`` the squared latent difference to the previous
    frame, then scaled to mean 1 over each frame: a frame's loss keeps its scale and only moves towards the
    moving parts (in a game, the sprites the keys move), away from a background the model copies early.
    The first frame of a window, with nothing before it, and ``strength`` 0 give uniform weights.

    With ``sprite`` above 0 and a ``background`` latent [h, w, C] (a game's empty screen, for example the
    per-position median of its frames), ``sprite * away / mean(away)`` is added, ``away`` the squared latent
    distance of each position to the background: the sprites keep their weight when they stand still, where
    the motion term alone gives them none.
    """
    B, T, h, w, _ = z_BThwC.shape
    weights = jnp.ones((B, T, h, w), z_BThwC.dtype)
    if strength == 0.0 and (sprite == 0.0 or background_hwC is None):
        return weights
    if strength:
        change = jnp.mean((z_BThwC[:, 1:] - z_BThwC[:, :-1]) ** 2, axis=-1)  # [B, T-1, h, w]
        change = jnp.concatenate([jnp.zeros_like(change[:, :1]), change], axis=1)
        weights = weights + strength * change / (jnp.mean(change, axis=(2, 3), keepdims=True) + 1e-6)
    if sprite and background_hwC is not None:
        away = jnp.mean((z_BThwC - background_hwC) ** 2, axis=-1)  # [B, T, h, w]
        weights = weights + sprite * away / (jnp.mean(away, axis=(2, 3), keepdims=True) + 1e-6)
    return weights / jnp.mean(weights, axis=(2, 3), keepdims=True)
