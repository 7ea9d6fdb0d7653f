"""Transformer parts: temporal RoPE, attention that can run over a KV cache, MLP, adaLN-Zero block.

Dimension keys: B batch, S tokens in the attended sequence, Q query tokens,
H heads, K head size, D model width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def rope(x_BSHK: jax.Array, pos_BS: jax.Array, theta: float = 10_000.0) -> jax.Array:
    """Rotary position embedding on the last axis, positions given per token (float or int).

    Only differences of positions matter to attention scores, so cached keys can be
    rotated at any offset as long as queries use the same one.
    """
    half = x_BSHK.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [K/2]
    angles = pos_BS.astype(jnp.float32)[..., None, None] * freqs  # [B, S, 1, K/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = x_BSHK[..., :half], x_BSHK[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x_BSHK.dtype)


def attend(q_BQHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array, mask_BQS: jax.Array) -> jax.Array:
    """Softmax attention; ``mask`` True where a query may see a key. -> [B, Q, H, K]."""
    return jax.nn.dot_product_attention(q_BQHK, k_BSHK, v_BSHK, mask=mask_BQS[:, None])


class Attention(nnx.Module):
    """Multi-head attention with RMS-normalised queries and keys (stable at any learning rate)."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.head_dim = width // heads
        self.qkv = nnx.Linear(width, 3 * width, use_bias=False, rngs=rngs)
        self.q_norm = nnx.RMSNorm(self.head_dim, rngs=rngs)
        self.k_norm = nnx.RMSNorm(self.head_dim, rngs=rngs)
        self.out = nnx.Linear(width, width, use_bias=False, rngs=rngs)

    def project(self, x_BSD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Queries, keys (both normalised, not yet rotated) and values [B, S, H, K]."""
        B, S, _ = x_BSD.shape
        q, k, v = jnp.split(self.qkv(x_BSD).reshape(B, S, 3 * self.heads, self.head_dim), 3, axis=2)
        return self.q_norm(q), self.k_norm(k), v

    def output(self, o_BSHK: jax.Array) -> jax.Array:
        B, S = o_BSHK.shape[:2]
        return self.out(o_BSHK.reshape(B, S, -1))


class MLP(nnx.Module):
    def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(nnx.gelu(self.fc1(x), approximate=True))


def modulate(x_BSD: jax.Array, shift_BSD: jax.Array, scale_BSD: jax.Array) -> jax.Array:
    return x_BSD * (1.0 + scale_BSD) + shift_BSD


class Block(nnx.Module):
    """Pre-norm transformer block whose norms are modulated by a conditioning vector (adaLN-Zero).

    The conditioning is given per frame [B, F, D] (its noise level and action) and
    shared by that frame's Q/F tokens. The modulation starts at zero, so each
    block starts as the identity.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, use_scale=False, use_bias=False, rngs=rngs)
        self.attn = Attention(width, heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, use_scale=False, use_bias=False, rngs=rngs)
        self.mlp = MLP(width, int(width * mlp_ratio), rngs=rngs)
        zeros = nnx.initializers.zeros_init()
        self.ada = nnx.Linear(width, 6 * width, kernel_init=zeros, bias_init=zeros, rngs=rngs)

    def __call__(
        self,
        x_BQD: jax.Array,
        c_BFD: jax.Array,
        pos_BQ: jax.Array,
        mask_BQS: jax.Array,
        past_k_BPHK: jax.Array | None = None,
        past_v_BPHK: jax.Array | None = None,
        past_pos_BP: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns the new tokens and their (unrotated) keys and values, to be cached.

        Without a past, the queries attend to themselves under ``mask`` [B, Q, Q].
        With one, they attend to the past keys (rotated here at ``past_pos``)
        followed by themselves; ``mask`` is then [B, Q, P + Q].
        """
        mod = self.ada(nnx.silu(c_BFD))  # per frame [B, F, 6D], then shared by the frame's tokens
        mod = jnp.repeat(mod, x_BQD.shape[1] // c_BFD.shape[1], axis=1)
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
        h = modulate(self.norm1(x_BQD), shift1, scale1)
        q, k, v = self.attn.project(h)
        q_r, k_r = rope(q, pos_BQ), rope(k, pos_BQ)
        if past_k_BPHK is not None:
            keys = jnp.concatenate([rope(past_k_BPHK, past_pos_BP), k_r], axis=1)
            values = jnp.concatenate([past_v_BPHK, v], axis=1)
        else:
            keys, values = k_r, v
        x = x_BQD + gate1 * self.attn.output(attend(q_r, keys, values, mask_BQS))
        x = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x, k, v
