"""The dynamics model: a block-causal diffusion transformer over latent tokens of a window of frames.

Each frame's latent grid [h, w, C] is cut into patches, one token each
(8x8x16 latents with patch 2 -> 16 tokens of 64 numbers). A frame's tokens see
their own frame and earlier frames, never later ones. Each frame carries its own
noise level and the action that led to it (the learned null action for "no
action"), which modulate its tokens through adaLN. Positions: a learned
embedding per token within a frame, and rotary embeddings of the frame index in
time, so that cached keys of past frames stay valid as the window rolls.

The model predicts the clean latents of every frame (x0-prediction).

Dimension keys: B batch, T frames, N tokens per frame, D width, L layers,
P cached tokens, H heads, K head size.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from worldplay.config import DynamicsConfig
from worldplay.models.layers import Block, modulate


def timestep_embedding(t: jax.Array, dim: int = 256, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding of noise levels t in [0, 1] -> [..., dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (1000.0 * t.astype(jnp.float32))[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class Dynamics(nnx.Module):
    """``__call__`` for training (all frames, block-causal); ``step`` for one new frame over a KV cache."""

    def __init__(self, config: DynamicsConfig, latent_shape: tuple[int, int, int], num_actions: int, *, rngs: nnx.Rngs):
        h, w, C = latent_shape
        p, D = config.patch, config.width
        if h % p or w % p:
            raise ValueError(f"latent grid {h}x{w} is not divisible by dynamics.patch={p}")
        self.config = config
        self.latent_shape = (h, w, C)
        self.grid = (h // p, w // p)
        self.tokens = self.grid[0] * self.grid[1]
        self.token_dim = p * p * C
        self.num_actions = num_actions
        self.null_action = num_actions  # the extra, learned "no action" embedding
        self.embed = nnx.Linear(self.token_dim, D, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (self.tokens, D)))
        self.action_embed = nnx.Embed(num_actions + 1, D, rngs=rngs)
        self.time1 = nnx.Linear(256, D, rngs=rngs)
        self.time2 = nnx.Linear(D, D, rngs=rngs)
        self.blocks = nnx.List([Block(D, config.heads, config.mlp_ratio, rngs=rngs) for _ in range(config.depth)])
        self.norm_out = nnx.LayerNorm(D, use_scale=False, use_bias=False, rngs=rngs)
        zeros = nnx.initializers.zeros_init()
        self.ada_out = nnx.Linear(D, 2 * D, kernel_init=zeros, bias_init=zeros, rngs=rngs)
        self.head = nnx.Linear(D, self.token_dim, kernel_init=zeros, rngs=rngs)

    def matmul_flops(self, frames: int) -> int:
        """FLOPs of the matrix products of one forward pass over a sequence of ``frames`` frames.

        The model FLOPs of model FLOPs utilisation: every dense layer and both attention
        products (computed over the whole block-causal window, as the training pass does),
        at 2 FLOPs per multiply-add; norms, softmax and activations are left out.
        A training step costs about three times this per sequence (forward, and backward
        for the activations and for the weights).
        """
        c = self.config
        D, F, E, T = c.width, int(c.width * c.mlp_ratio), self.token_dim, frames
        S = T * self.tokens
        per_frame = self.time1.in_features * D + D * D + c.depth * 6 * D * D + 2 * D * D  # conditioning, adaLN, out
        per_token = E * D + c.depth * (3 * D * D + D * D + 2 * D * F) + D * E  # embed, blocks, head
        attention = c.depth * 2 * S * S * D  # scores and weighted values
        return 2 * (T * per_frame + S * per_token + attention)

    # -- tokens ---------------------------------------------------------------
    def patchify(self, z_XhwC: jax.Array) -> jax.Array:
        """[..., h, w, C] -> [..., N, p*p*C]."""
        p = self.config.patch
        *lead, h, w, C = z_XhwC.shape
        x = z_XhwC.reshape(*lead, h // p, p, w // p, p, C)
        x = jnp.moveaxis(x, -4, -3)  # [..., h/p, w/p, p, p, C]
        return x.reshape(*lead, self.tokens, self.token_dim)

    def unpatchify(self, x_XNE: jax.Array) -> jax.Array:
        p = self.config.patch
        (gh, gw), (h, w, C) = self.grid, self.latent_shape
        *lead, _, _ = x_XNE.shape
        x = x_XNE.reshape(*lead, gh, gw, p, p, C)
        x = jnp.moveaxis(x, -3, -4)
        return x.reshape(*lead, h, w, C)

    def condition(self, t: jax.Array, actions: jax.Array) -> jax.Array:
        """Noise level and action of each frame -> conditioning vector [..., D]."""
        temb = self.time2(nnx.silu(self.time1(timestep_embedding(t))))
        return temb + self.action_embed(actions)

    def _out(self, x_BSD: jax.Array, c_BFD: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.ada_out(nnx.silu(c_BFD)), 2, axis=-1)
        reps = x_BSD.shape[1] // c_BFD.shape[1]
        shift, scale = jnp.repeat(shift, reps, axis=1), jnp.repeat(scale, reps, axis=1)
        return self.head(modulate(self.norm_out(x_BSD), shift, scale))

    # -- training: a whole window ------------------------------------------------
    def __call__(self, z_BThwC: jax.Array, t_BT: jax.Array, actions_BT: jax.Array) -> jax.Array:
        """Noisy latents of T frames, their noise levels and actions -> predicted clean latents."""
        B, T = t_BT.shape
        N = self.tokens
        x = (self.embed(self.patchify(z_BThwC)) + self.pos[...]).reshape(B, T * N, -1)
        c = self.condition(t_BT, actions_BT)  # [B, T, D]
        frame = jnp.repeat(jnp.arange(T), N)  # [T*N]: the frame of each token
        mask = jnp.broadcast_to(frame[:, None] >= frame[None, :], (B, T * N, T * N))
        pos = jnp.broadcast_to(frame.astype(jnp.float32), (B, T * N))
        for block in self.blocks:
            x, _, _ = block(x, c, pos, mask)
        return self.unpatchify(self._out(x, c).reshape(B, T, N, -1))

    # -- sampling: one new frame over cached past frames -----------------------
    def step(
        self,
        z_BhwC: jax.Array,
        t_B: jax.Array,
        actions_B: jax.Array,
        past_k_LBPHK: jax.Array,
        past_v_LBPHK: jax.Array,
        past_pos_BP: jax.Array,
        past_valid_BP: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One new frame at position 0 attending to cached past tokens (positions < 0).

        Returns the predicted clean latents [B, h, w, C] and the new frame's keys
        and values [L, B, N, H, K] (to cache them).
        """
        B = t_B.shape[0]
        N = self.tokens
        x = self.embed(self.patchify(z_BhwC)) + self.pos[...]  # [B, N, D]
        c = self.condition(t_B, actions_B)[:, None]  # [B, 1, D]
        pos = jnp.zeros((B, N), jnp.float32)
        mask = jnp.concatenate(
            [jnp.broadcast_to(past_valid_BP[:, None, :], (B, N, past_valid_BP.shape[1])), jnp.ones((B, N, N), bool)],
            axis=2,
        )
        ks, vs = [], []
        for layer, block in enumerate(self.blocks):
            x, k, v = block(x, c, pos, mask, past_k_LBPHK[layer], past_v_LBPHK[layer], past_pos_BP)
            ks.append(k)
            vs.append(v)
        return self.unpatchify(self._out(x, c)), jnp.stack(ks), jnp.stack(vs)
