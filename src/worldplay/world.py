"""A trained world, stepped one frame at a time.

    world = load_world("checkpoints/boxing")
    state = world.start(frames[:4], actions[:3])          # prompt frames and the actions between them
    state, frame = world.step(state, action, guidance=1.5) # uint8 [H, W, 3]
    state, frame, reward, end = world.step_with_reward(state, action)  # and what the step scored

A world may carry a reward model (``models/reward.py``): it reads the latents of the last
few frames, the new one included, inside the same jitted frame function. A world without
one predicts reward 0 and never ends an episode (``world.has_reward`` says which). A reward
model with a lag L reports each step's reward L steps late (the first L steps of a stream
report 0: their rewards would be the prompt's).

One jitted function makes a frame: every denoising step (conditional and
unconditional predictions as one batch of two), the KV-cache update and the
decode. Its shapes are fixed: past frames live in a rolling cache of
``window - 1`` slots, so a world runs for any number of frames without
recompiling. The state is an immutable pytree, so keeping an old state forks the
world for free (rewind, counterfactual play).

The Gymnasium environments around a world are in ``worldplay.env``; this module
knows no screen and no agent API.

Dimension keys: B streams, S cache slots, N tokens per frame, L layers, H heads, K head size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from worldplay import diffusion
from worldplay.checkpoint import read_world_meta, resolve_world, restore_into, verify_files
from worldplay.compiled import hot_jit, hot_key, hot_options, world_options
from worldplay.config import AutoencoderConfig, DynamicsConfig, RateConfig, RewardConfig, part_from_dict
from worldplay.errors import WorldplayError
from worldplay.models import reward as reward_model
from worldplay.models.autoencoder import Autoencoder
from worldplay.models.dynamics import Dynamics


@struct.dataclass
class WorldState:
    """Where a world (or B worlds) stands: the cached past and the random key."""

    cache_k: jax.Array  # [L, B, S*N, H, K] keys of past frames (not rotated)
    cache_v: jax.Array  # [L, B, S*N, H, K]
    slot_frame: jax.Array  # [B, S] int32: frame index held by each slot of each stream, -1 while empty
    frame_index: jax.Array  # [B] int32: index of each stream's next frame (streams restart on their own)
    recent: jax.Array  # [B, F, h, w, C] normalised latents of the last F frames, newest last (for the reward model)
    recent_actions: jax.Array  # [B, F] int32: the action that made each of those frames
    steps: jax.Array  # [B] int32: frames each stream has generated since its start
    since_event: jax.Array  # [B, 2] int32: steps since its reward model last predicted a negative / positive event
    key: jax.Array  # PRNG key
    batched: bool = struct.field(pytree_node=False, default=False)

    @property
    def batch_size(self) -> int:
        return int(self.cache_k.shape[1])


def _past(dyn: Dynamics, state: WorldState, copies: int = 1) -> tuple[jax.Array, ...]:
    """Cached keys/values, their time positions relative to the next frame, and validity [B, S*N]."""
    N = dyn.tokens
    rel = (state.slot_frame - state.frame_index[:, None]).astype(jnp.float32)  # [B, S], < 0 where valid
    pos = jnp.tile(jnp.repeat(rel, N, axis=1), (copies, 1))  # [B * copies, S*N]
    valid = jnp.tile(jnp.repeat(state.slot_frame >= 0, N, axis=1), (copies, 1))
    k, v = state.cache_k, state.cache_v
    if copies > 1:
        k, v = jnp.concatenate([k] * copies, axis=1), jnp.concatenate([v] * copies, axis=1)
    return k, v, pos, valid


def fill(
    dyn: Dynamics, state: WorldState, z_BhwC: jax.Array, actions_B: jax.Array, mask_B: jax.Array | None = None
) -> WorldState:
    """Append a frame (clean normalised latents and the action that led to it) to the cache of each stream.

    The frame is first noised to the context level (``DynamicsConfig.context_noise_at_sampling``), against drift.
    With ``mask_B``, only the streams where it is True take the frame; the others are left exactly as they were.
    The clean latents also go into ``recent`` (a stream's first frame fills all of it).
    """
    c = dyn.config.context_noise_at_sampling
    key, k_noise = jax.random.split(state.key)
    z_noisy = diffusion.add_noise(z_BhwC, jax.random.normal(k_noise, z_BhwC.shape), c)
    t = jnp.full(z_BhwC.shape[:1], c)
    _, k_new, v_new = dyn.step(z_noisy, t, actions_B, *_past(dyn, state))  # [L, B, N, H, K]
    B, S = state.slot_frame.shape
    N = dyn.tokens
    take = jnp.ones((B,), bool) if mask_B is None else mask_B
    slot = state.frame_index % S  # [B]: each stream writes its own next slot

    def write(cache_BPHK, new_BNHK, s, keep):  # one stream of one layer: its slot, unless it is masked out
        old = jax.lax.dynamic_slice_in_dim(cache_BPHK, s * N, N, axis=0)
        return jax.lax.dynamic_update_slice_in_dim(cache_BPHK, jnp.where(keep, new_BNHK, old), s * N, axis=0)

    write_all = jax.vmap(jax.vmap(write, in_axes=(0, 0, 0, 0)), in_axes=(0, 0, None, None))  # layers, streams
    first = (state.frame_index == 0)[:, None, None, None, None]
    rolled = jnp.concatenate([state.recent[:, 1:], z_BhwC[:, None].astype(state.recent.dtype)], axis=1)
    recent = jnp.where(first, jnp.broadcast_to(z_BhwC[:, None], state.recent.shape), rolled)
    rolled_actions = jnp.concatenate([state.recent_actions[:, 1:], actions_B[:, None].astype(jnp.int32)], axis=1)
    return state.replace(
        recent=jnp.where(take[:, None, None, None, None], recent, state.recent),
        recent_actions=jnp.where(take[:, None], rolled_actions, state.recent_actions),
        cache_k=write_all(state.cache_k, k_new, slot, take),
        cache_v=write_all(state.cache_v, v_new, slot, take),
        slot_frame=jnp.where(
            (jnp.arange(S)[None, :] == slot[:, None]) & take[:, None], state.frame_index[:, None], state.slot_frame
        ),
        frame_index=state.frame_index + take.astype(jnp.int32),
        key=key,
    )


def clear(state: WorldState, mask_B: jax.Array) -> WorldState:
    """Forget the past of the streams where ``mask_B`` is True (their next frame is frame 0 again)."""
    return state.replace(
        slot_frame=jnp.where(mask_B[:, None], -1, state.slot_frame),
        frame_index=jnp.where(mask_B, 0, state.frame_index),
        steps=jnp.where(mask_B, 0, state.steps),
        since_event=jnp.where(mask_B[:, None], reward_model.SINCE_START, state.since_event),
    )


def generate(
    dyn: Dynamics, state: WorldState, actions_B: jax.Array, guidance: jax.Array
) -> tuple[WorldState, jax.Array]:
    """Sample the next frame's normalised latents with ``sampling_steps`` Euler steps and CFG."""
    B = actions_B.shape[0]
    h, w, C = dyn.latent_shape
    key, k0 = jax.random.split(state.key)
    past = _past(dyn, state, copies=2)
    acts = jnp.concatenate([actions_B, jnp.full_like(actions_B, dyn.null_action)])
    grid = diffusion.time_grid(dyn.config.sampling_steps)

    def denoise(x, ts):
        t, t_next = ts
        x0_both, _, _ = dyn.step(jnp.concatenate([x, x]), jnp.full((2 * B,), t), acts, *past)
        x0 = diffusion.guide(x0_both[:B], x0_both[B:], guidance)
        return diffusion.euler_step(x, x0, t, t_next), None

    # unrolled: a few steps at most, and XLA's cost analysis (bench play) then counts every one of them
    x, _ = jax.lax.scan(denoise, jax.random.normal(k0, (B, h, w, C)), (grid[:-1], grid[1:]), unroll=True)
    return state.replace(key=key), x


@functools.cache
def _compiled(
    ae_def: nnx.GraphDef, dyn_def: nnx.GraphDef, rew_def: nnx.GraphDef | None = None, hot: tuple | None = None
) -> dict[str, Any]:
    """Jitted functions of split state, shared by every world of the same architecture made under the same
    `worldplay.compiled.HOT_OPTIONS` (``hot``, its key).

    ``rew`` is the reward model's split state and its class values, or None for a world without one.
    """

    def encode(ae_p, stats, frames):
        z = nnx.merge(ae_def, ae_p).encode(frames)
        return (z - stats[0]) / stats[1]

    def decode(ae_p, stats, z):
        return nnx.merge(ae_def, ae_p).decode(z * stats[1] + stats[0])

    def fill_fn(dyn_p, state, z, actions, mask):
        return fill(nnx.merge(dyn_def, dyn_p), state, z, actions, mask)

    def advance(dyn_p, state, actions, guidance):
        """The next frame's latents and the state after it, without the decode."""
        dyn = nnx.merge(dyn_def, dyn_p)
        state, z = generate(dyn, state, actions, guidance)
        return fill(dyn, state, z, actions).replace(steps=state.steps + 1), z

    def outcome(rew, state):
        """The reward of the step that made the newest frame (with a lag L: the frame L before it), as reported,
        and whether the newest frame ends the episode; and the state with the reward model's event counts."""
        B = state.steps.shape[0]
        if rew_def is None:
            return state, jnp.zeros((B,), jnp.float32), jnp.zeros((B,), bool)
        rew_p, values, refractory = rew
        model = nnx.merge(rew_def, rew_p)
        lag = model.config.lag
        reward, end = reward_model.predict(model, values, state.recent, state.recent_actions[:, -1 - lag])
        reward = jnp.where(state.steps > lag, reward, 0.0)  # not a step of the prompt's, before the stream started
        reward, since = reward_model.report(reward, state.since_event, refractory)
        return state.replace(since_event=since), reward, end

    def teacher(dyn_p, state, z_real, actions, guidance):
        """The world's sample of the next frame from the cached real past, then the real frame into the cache."""
        dyn = nnx.merge(dyn_def, dyn_p)
        state, z = generate(dyn, state, actions, guidance)
        return fill(dyn, state, z_real, actions), z

    def predict_reward(rew, z, actions):
        rew_p, values, _ = rew
        return reward_model.predict(nnx.merge(rew_def, rew_p), values, z, actions)

    def frame(ae_p, dyn_p, rew, stats, state, actions, guidance):
        state, z = advance(dyn_p, state, actions, guidance)
        state, reward, end = outcome(rew, state)
        return state, decode(ae_p, stats, z), z, reward, end

    return {
        "encode": hot_jit(encode),
        "decode": hot_jit(decode),
        "fill": hot_jit(fill_fn),
        "clear": jax.jit(clear),
        "advance": hot_jit(advance),
        "teacher": hot_jit(teacher),
        "frame": hot_jit(frame),  # no donation: the caller's state stays valid, so forking is free
        "predict_reward": hot_jit(predict_reward),
    }


class WorldModel:
    """An autoencoder and a dynamics model, stepped frame by frame (see the module docstring)."""

    def __init__(
        self,
        autoencoder: Autoencoder,
        dynamics: Dynamics,
        *,
        latent_mean: Sequence[float],
        latent_std: Sequence[float],
        action_names: Sequence[str],
        fps: float = 15.0,
        meta: dict[str, Any] | None = None,
        prompts: tuple[np.ndarray, np.ndarray] | None = None,
        reward: reward_model.RewardHead | None = None,
        rate: reward_model.RateHead | None = None,
    ):
        if len(action_names) != dynamics.num_actions:
            raise WorldplayError(f"{len(action_names)} action names for a model of {dynamics.num_actions} actions")
        self.action_names = tuple(action_names)
        self.fps = float(fps)
        size = autoencoder.config.frame_size
        self.frame_shape = (size, size, 3)
        self.config = dynamics.config
        self.meta = dict(meta or {})
        self.prompts = prompts
        self._stats = jnp.asarray(np.stack([latent_mean, latent_std]), jnp.float32)  # [2, C]
        # a world runs on one device, whatever mesh its weights were trained on
        device = jax.devices()[0]
        self._ae_def, self._ae_p = nnx.split(autoencoder)
        self._dyn_def, self._dyn_p = nnx.split(dynamics)
        self._ae_p, self._dyn_p = jax.device_put((self._ae_p, self._dyn_p), device)
        self._dyn = dynamics
        self.reward = reward
        self._rew_def, self._rew = None, None
        if reward is not None:
            self._rew_def, rew_p = nnx.split(reward.model)
            values = jnp.asarray(reward.class_values, jnp.float32)
            self._rew = jax.device_put((rew_p, values, jnp.asarray(reward.refractory, jnp.int32)), device)
        self.rate = rate
        with hot_options(world_options()):
            self._fns = _compiled(self._ae_def, self._dyn_def, self._rew_def, hot_key())
            if rate is not None:
                rate_def, rate_p = nnx.split(rate.model)
                self._rate = jax.device_put((rate_p, jnp.asarray(rate.class_values, jnp.float32)), device)
                self._rate_fn = hot_jit(
                    lambda p, values, z, a: reward_model.expected_rate(nnx.merge(rate_def, p), values, z, a)
                )

    @property
    def has_reward(self) -> bool:
        """Whether this world predicts rewards and episode ends (else they are 0 and never)."""
        return self.reward is not None

    # -- frames <-> latents --------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """The shape of one frame's latents (h, w, C)."""
        return tuple(self._dyn.latent_shape)  # type: ignore[return-value]

    @property
    def has_rate(self) -> bool:
        """Whether this world has a rate model (expected rewards, for scoring agents: :meth:`expected_rewards`)."""
        return self.rate is not None

    def expected_rewards(self, z_NThwC: Any, actions_NT: Any, chunk: int = 1024) -> np.ndarray:
        """The rate model's expected reward of every step of N streams [N, T] (float32), from the normalised latents
        of their frames [N, T, h, w, C] and the action taken on each frame [N, T] (``actions[:, j]`` turns frame j
        into frame j + 1; the last one may be a placeholder). Before a stream's first frame, the model reads that
        frame and its action repeated."""
        z, a, frames, keys = self._rate_inputs(z_NThwC, actions_NT, "expected_rewards", first_steps=True)
        N, T = a.shape[0], a.shape[1] - self.rate.config.history
        rows = np.stack(np.meshgrid(np.arange(N), np.arange(T), indexing="ij"), -1).reshape(-1, 2)
        out = np.zeros(N * T, np.float32)
        for first in range(0, len(rows), chunk):
            n, j = rows[first : first + chunk].T
            pad = chunk - len(n)  # one shape, one compile
            n, j = np.pad(n, (0, pad)), np.pad(j, (0, pad)) + self.rate.config.history
            zb = z[n[:, None], j[:, None] + frames]
            ab = a[n[:, None], j[:, None] + keys]
            e = self._rate_fn(self._rate[0], self._rate[1], jnp.asarray(zb), jnp.asarray(ab))
            out[first : first + chunk - pad] = np.asarray(e)[: chunk - pad]
        return out.reshape(N, T)

    def expected_rewards_last(self, z_NThwC: Any, actions_NT: Any) -> np.ndarray:
        """``expected_rewards(z, actions)[:, -1]``, the expected reward of each stream's last step [N], computed for
        that step alone: what an environment needs at every step (``T`` = ``rate.config.history + 1`` frames of
        history are all the model reads)."""
        z, a, frames, keys = self._rate_inputs(z_NThwC, actions_NT, "expected_rewards_last", first_steps=False)
        j = a.shape[1] - 1
        e = self._rate_fn(self._rate[0], self._rate[1], jnp.asarray(z[:, j + frames]), jnp.asarray(a[:, j + keys]))
        return np.asarray(e, np.float32)

    def _rate_inputs(self, z_NThwC: Any, actions_NT: Any, what: str, first_steps: bool) -> tuple[np.ndarray, ...]:
        """Checked latents and actions, each stream's first frame and action repeated before it, and the offsets
        of the frames and keys the model reads relative to a step's frame. Repeated ``history`` times when every
        step is read (``first_steps``); else only as often as the last step's reading needs."""
        if self.rate is None:
            raise WorldplayError(
                "this world has no rate model; add one: worldplay train rate --config C --world FOLDER"
            )
        rc = self.rate.config
        z, a = np.asarray(z_NThwC, np.float32), np.clip(np.asarray(actions_NT, np.int32), 0, len(self.action_names) - 1)
        if z.ndim != 5 or a.shape != z.shape[:2]:
            raise WorldplayError(f"{what}: latents [N, T, h, w, C] and actions [N, T], got {z.shape} and {a.shape}")
        H = rc.history if first_steps else max(0, rc.history + 1 - z.shape[1])
        z = np.concatenate([np.repeat(z[:, :1], H, axis=1), z], axis=1)
        a = np.concatenate([np.repeat(a[:, :1], H, axis=1), a], axis=1)
        frames = np.arange(-rc.lag - rc.frames + 1, -rc.lag + 1)  # relative to the step's frame
        keys = np.arange(-rc.keys + 1, 1)
        return z, a, frames, keys

    def expected_returns(self, z_NThwC: Any, actions_NT: Any, prompt: int, lengths_N: Any) -> np.ndarray:
        """The rate model's expected return of N episodes [N] (float64): the sum of the expected rewards of each
        one's first ``lengths[n]`` generated steps, from the latents of its frames [N, P + T, h, w, C] and the action
        taken on each [N, P + T] (see :meth:`expected_rewards`); the first ``prompt`` frames are the prompt's, and
        step t acts on frame ``prompt - 1 + t``."""
        expected = self.expected_rewards(z_NThwC, actions_NT)[:, prompt - 1 :]
        counted = np.arange(expected.shape[1])[None, :] < np.asarray(lengths_N)[:, None]
        return np.where(counted, expected, 0.0).sum(axis=1)

    def _check_frames(self, frames: np.ndarray, what: str) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.shape[-3:] != self.frame_shape:
            raise WorldplayError(
                f"{what}: expected uint8 frames [..., {', '.join(map(str, self.frame_shape))}], "
                f"got {frames.dtype} {list(frames.shape)} (resize prompts to the world's frame size)"
            )
        return frames

    def encode(self, frames_BHWC: np.ndarray) -> jax.Array:
        """uint8 [B, H, W, 3] -> normalised latents [B, h, w, C] (unit scale per channel)."""
        return self._fns["encode"](self._ae_p, self._stats, jnp.asarray(self._check_frames(frames_BHWC, "encode")))

    def decode(self, latents_BhwC: jax.Array) -> np.ndarray:
        """Normalised latents [B, h, w, C] -> uint8 frames [B, H, W, 3]."""
        return np.asarray(self._fns["decode"](self._ae_p, self._stats, jnp.asarray(latents_BhwC)))

    # -- stepping ------------------------------------------------------------------
    def _actions(self, actions: Any, batch: int, what: str) -> jax.Array:
        a = np.asarray(actions)
        if a.ndim == 0:
            a = np.full((batch,), int(a))
        if a.shape != (batch,) or not np.issubdtype(a.dtype, np.integer):
            raise WorldplayError(f"{what}: expected {batch} integer action(s), got {a.dtype} {list(a.shape)}")
        if a.size and (a.min() < 0 or a.max() >= len(self.action_names)):
            raise WorldplayError(
                f"{what}: action {int(a.max() if a.max() >= len(self.action_names) else a.min())} out of range; "
                f"this world has {len(self.action_names)} actions: {', '.join(self.action_names)}"
            )
        return jnp.asarray(a, jnp.int32)

    def empty_state(self, batch: int = 1, seed: int = 0, *, batched: bool = True) -> WorldState:
        dyn, cfg = self._dyn, self.config
        S = cfg.window - 1
        shape = (cfg.depth, batch, S * dyn.tokens, cfg.heads, cfg.width // cfg.heads)
        F = self.reward.frames if self.reward else 1
        return WorldState(
            cache_k=jnp.zeros(shape, jnp.float32),
            cache_v=jnp.zeros(shape, jnp.float32),
            slot_frame=jnp.full((batch, S), -1, jnp.int32),
            frame_index=jnp.zeros((batch,), jnp.int32),
            recent=jnp.zeros((batch, F, *dyn.latent_shape), jnp.float32),
            recent_actions=jnp.full((batch, F), dyn.null_action, jnp.int32),
            steps=jnp.zeros((batch,), jnp.int32),
            since_event=jnp.full((batch, 2), reward_model.SINCE_START, jnp.int32),
            key=jax.random.key(seed),
            batched=batched,
        )

    def start(self, prompt_frames: np.ndarray, prompt_actions: Any = None, *, seed: int = 0) -> WorldState:
        """Start from prompt frames [P, H, W, 3] (or [B, P, H, W, 3] for B streams).

        ``prompt_actions`` [P - 1] (or [B, P - 1]) are the actions taken between
        the prompt frames; without them the model sees the null action there.
        """
        frames = self._check_frames(prompt_frames, "prompt frames")
        batched = frames.ndim == 5
        if not batched:
            if frames.ndim != 4:
                raise WorldplayError(f"prompt frames: expected [P, H, W, 3] or [B, P, H, W, 3], got {frames.shape}")
            frames = frames[None]
        B, P = frames.shape[:2]
        if P < 1:
            raise WorldplayError("prompt frames: need at least one frame")
        null = self._dyn.null_action
        if prompt_actions is None:
            acts = np.full((B, max(P - 1, 0)), null, np.int64)
        else:
            acts = np.asarray(prompt_actions)
            acts = acts if batched else acts[None]
            if acts.shape != (B, P - 1):
                raise WorldplayError(
                    f"prompt actions: expected shape {[B, P - 1][int(not batched) :]}, got {acts.shape}"
                )
            self._actions(acts.reshape(-1), acts.size, "prompt actions")
        z = self.encode(frames.reshape(B * P, *self.frame_shape)).reshape(B, P, *self._dyn.latent_shape)
        return self.start_latents(z, acts, seed=seed, batched=batched)

    def start_latents(
        self, z_BPhwC: jax.Array, prompt_actions_BQ: np.ndarray, *, seed: int = 0, batched: bool = True
    ) -> WorldState:
        """Start B streams from normalised prompt latents [B, P, h, w, C] and the actions between them.

        ``prompt_actions`` has at least P - 1 columns (any later ones are ignored).
        """
        B = z_BPhwC.shape[0]
        return self._fill_prompt(self.empty_state(B, seed, batched=batched), z_BPhwC, prompt_actions_BQ, None)

    def _fill_prompt(
        self, state: WorldState, z_BPhwC: jax.Array, prompt_actions_BQ: np.ndarray, mask_B: np.ndarray | None
    ) -> WorldState:
        B, P = z_BPhwC.shape[:2]
        prev = np.concatenate([np.full((B, 1), self._dyn.null_action), np.asarray(prompt_actions_BQ)[:, : P - 1]], 1)
        prev = prev.astype(np.int32)
        mask = jnp.ones((B,), bool) if mask_B is None else jnp.asarray(mask_B, bool)
        for p in range(P):
            state = self._fns["fill"](self._dyn_p, state, z_BPhwC[:, p], jnp.asarray(prev[:, p]), mask)
        return state

    def restart(
        self, state: WorldState, mask: Any, prompt_frames: np.ndarray, prompt_actions: Any = None
    ) -> WorldState:
        """Restart the streams where ``mask`` [B] is True from prompt frames [B, P, H, W, 3] (rows of the other
        streams are ignored; give any frames there) and the actions between them [B, P - 1]; the other streams
        go on exactly as they were. What a vector environment's autoreset needs."""
        mask = np.asarray(mask, bool)
        if mask.shape != (state.batch_size,):
            raise WorldplayError(f"restart mask: expected shape [{state.batch_size}], got {list(mask.shape)}")
        frames = self._check_frames(prompt_frames, "prompt frames")
        if frames.ndim != 5 or frames.shape[0] != state.batch_size:
            raise WorldplayError(f"prompt frames: expected [{state.batch_size}, P, H, W, 3], got {frames.shape}")
        B, P = frames.shape[:2]
        acts = np.full((B, max(P - 1, 0)), self._dyn.null_action) if prompt_actions is None else prompt_actions
        acts = np.asarray(acts)
        if acts.shape != (B, P - 1):
            raise WorldplayError(f"prompt actions: expected shape [{B}, {P - 1}], got {list(acts.shape)}")
        z = self.encode(frames.reshape(B * P, *self.frame_shape)).reshape(B, P, *self._dyn.latent_shape)
        state = self._fns["clear"](state, jnp.asarray(mask))
        return self._fill_prompt(state, z, acts, mask)

    def step(self, state: WorldState, action: Any, guidance: float | None = None) -> tuple[WorldState, np.ndarray]:
        """Take ``action`` (an int, or [B] ints) at the latest frame -> (next state, next frame uint8).

        ``guidance`` scales the action's effect (classifier-free guidance);
        None uses the world's own default.
        """
        state, frames, _, _, _ = self._frame(state, action, guidance)
        frames = np.asarray(frames)
        return state, frames if state.batched else frames[0]

    def step_with_reward(
        self, state: WorldState, action: Any, guidance: float | None = None
    ) -> tuple[WorldState, np.ndarray, Any, Any]:
        """Like :meth:`step`, and the step's predicted reward and episode end: (next state, next frame, reward,
        end), with reward float32 [B] and end bool [B] for B streams (a float and a bool for one).

        ``end`` says the new frame is the episode's last. A world without a reward model gives 0.0 and False.
        A reward model with a lag L (``world.reward.lag``) gives the reward of the step L steps before this one.
        """
        state, frames, _, reward, end = self._frame(state, action, guidance)
        frames, reward, end = np.asarray(frames), np.asarray(reward), np.asarray(end)
        if state.batched:
            return state, frames, reward, end
        return state, frames[0], float(reward[0]), bool(end[0])

    def predict_reward(self, z_BFhwC: Any, actions_B: Any) -> tuple[np.ndarray, np.ndarray]:
        """The reward model on given normalised latents of F frames [B, F, h, w, C] (newest last) and the actions
        that made the newest frames [B] -> (reward float32 [B], end bool [B]). For evaluation on real frames."""
        if self.reward is None:
            raise WorldplayError("this world has no reward model; add one: worldplay train reward --world FOLDER")
        z = np.asarray(z_BFhwC, np.float32)
        B = len(z)
        pad = -B % 256  # a few fixed batch shapes: one compile each
        acts = np.concatenate([self._actions(actions_B, B, "actions"), np.zeros(pad, np.int32)])
        z = np.concatenate([z, np.zeros((pad, *z.shape[1:]), np.float32)])
        r, end = self._fns["predict_reward"](self._rew, jnp.asarray(z), jnp.asarray(acts))
        return np.asarray(r)[:B], np.asarray(end)[:B]

    def one_step_latents(
        self,
        z_BThwC: Any,
        actions_BT: Any,
        guidance: float | None = None,
        *,
        seed: int = 0,
        on_step: Callable[[], None] | None = None,
    ) -> np.ndarray:
        """The world's one-step predictions along real sequences: normalised latents [B, T, h, w, C] and the
        actions taken at each frame [B, T] -> [B, T, h, w, C], where frame t (t >= 1) is the world's sample of
        frame t from the real frames before it (its rolling window) and the action taken at t - 1; frame 0 is
        the real one. What the world makes of each real step: the decoder stage trains on these. ``on_step`` is
        called after each frame of the B streams (for a progress bar)."""
        z = jnp.asarray(z_BThwC, jnp.float32)
        B, T = z.shape[:2]
        acts = np.asarray(actions_BT)
        if acts.shape != (B, T):
            raise WorldplayError(f"actions: expected shape [{B}, {T}], got {list(acts.shape)}")
        prev = np.concatenate([np.full((B, 1), self._dyn.null_action), acts[:, :-1]], axis=1).astype(np.int32)
        self._actions(prev[:, 1:].reshape(-1), B * (T - 1), "actions")
        g = jnp.float32(self.config.guidance if guidance is None else guidance)
        state = self._fns["fill"](self._dyn_p, self.empty_state(B, seed), z[:, 0], jnp.asarray(prev[:, 0]), None)
        out = [z[:, 0]]
        for t in range(1, T):
            state, z_t = self._fns["teacher"](self._dyn_p, state, z[:, t], jnp.asarray(prev[:, t]), g)
            out.append(z_t)
            if on_step is not None:
                on_step()
        return np.asarray(jnp.stack(out, axis=1))

    def held_out_prompt(self, index: Any) -> tuple[np.ndarray, np.ndarray]:
        """Prompt window(s) shipped with the world, from held-out episodes: ``index`` (an int or [B] ints) ->
        (frames [.., P, H, W, 3], the actions between them [.., P - 1]), ready for :meth:`start`."""
        if self.prompts is None:
            raise WorldplayError("this world has no prompt frames (no prompts.npz in its folder); give a prompt image")
        frames, actions = self.prompts
        idx = np.asarray(index)
        if not np.issubdtype(idx.dtype, np.integer) or idx.min(initial=0) < 0 or idx.max(initial=0) >= len(frames):
            raise WorldplayError(f"prompt_index {index!r}: this world has {len(frames)} prompts, 0..{len(frames) - 1}")
        P = frames.shape[1]
        return np.array(frames[idx]), np.array(actions[idx][..., : P - 1])  # actions are stored [K, P] or [K, P - 1]

    def step_latent(self, state: WorldState, action: Any, guidance: float | None = None):
        """Like ``step`` but returns device arrays: (state, frames [B, H, W, 3], latents [B, h, w, C])."""
        return self._frame(state, action, guidance)[:3]

    def step_latent_with_reward(self, state: WorldState, action: Any, guidance: float | None = None):
        """Like :meth:`step_latent`, and the step's predicted rewards and ends: (state, frames [B, H, W, 3], latents
        [B, h, w, C], rewards [B], ends [B]) as device arrays (the inputs of a rate model, with the reward model's
        outputs)."""
        return self._frame(state, action, guidance)

    def _frame(self, state: WorldState, action: Any, guidance: float | None):
        """The jitted frame function: (state, frames, latents, rewards [B], ends [B]) as device arrays."""
        acts = self._actions(action, state.batch_size, "action")
        g = jnp.float32(self.config.guidance if guidance is None else guidance)
        return self._fns["frame"](self._ae_p, self._dyn_p, self._rew, self._stats, state, acts, g)

    def __repr__(self) -> str:
        return (
            f"WorldModel({self.meta.get('name', '?')}: {len(self.action_names)} actions, "
            f"frames {self.frame_shape}, {self.fps:g} fps, window {self.config.window})"
        )


def has_part(path: str | Path, meta: dict[str, Any], key: str) -> bool:
    """Whether the world folder at ``path`` (its world.json read into ``meta``) carries the optional part ``key``
    (``reward``, ``rate``): described in world.json, with its folder beside it."""
    return isinstance(meta.get(key), dict) and (Path(path) / key).is_dir()


def _restore_outcome_part(
    path: Path, meta: dict[str, Any], key: str, config_cls: type, model_cls: type, ae_cfg: AutoencoderConfig
) -> tuple[nnx.Module, tuple[float, ...]]:
    """A world folder's reward or rate model (part ``key``), restored, and the values of its reward classes."""
    cfg = part_from_dict(config_cls, meta[key]["config"], key)
    n_act = len(meta["action_names"])
    model = nnx.eval_shape(lambda: model_cls(cfg, ae_cfg.latent_shape, n_act, rngs=nnx.Rngs(0)))
    return restore_into(model, path / key), tuple(float(v) for v in meta[key]["class_values"])


def load_world(
    path: str | Path, *, sampling_steps: int | None = None, context_noise: float | None = None
) -> WorldModel:
    """Load a world folder (see ``worldplay.checkpoint``), or a shipped world by name (``"boxing"``, as on the
    command line; a folder of that name wins); it needs nothing else.

    ``sampling_steps`` and ``context_noise`` replace the world's own sampler settings
    (``dynamics.sampling_steps`` and the noise level of context frames at sampling).
    """
    path = resolve_world(path)
    meta = read_world_meta(path)
    verify_files(path, meta.get("files", {}))  # before any weight is read: a damaged file, named in one line
    ae_cfg = part_from_dict(AutoencoderConfig, meta["autoencoder"], "autoencoder")
    sampler = {"sampling_steps": sampling_steps, "sampling_context_noise": context_noise}
    dyn_values = {**meta["dynamics"], **{k: v for k, v in sampler.items() if v is not None}}
    dyn_cfg = part_from_dict(DynamicsConfig, dyn_values, "dynamics")
    ae = nnx.eval_shape(lambda: Autoencoder(ae_cfg, rngs=nnx.Rngs(0)))
    dyn = nnx.eval_shape(lambda: Dynamics(dyn_cfg, ae_cfg.latent_shape, len(meta["action_names"]), rngs=nnx.Rngs(0)))
    ae = restore_into(ae, path / "autoencoder")
    dyn = restore_into(dyn, path / "dynamics")
    prompts = None
    if (path / "prompts.npz").is_file():
        with np.load(path / "prompts.npz") as z:
            prompts = (z["frames"], z["actions"])
    reward = rate = None
    if has_part(path, meta, "reward"):
        model, values = _restore_outcome_part(path, meta, "reward", RewardConfig, reward_model.RewardModel, ae_cfg)
        refractory = tuple(int(v) for v in meta["reward"].get("refractory", (0, 0)))  # worlds before it: none
        reward = reward_model.RewardHead(model, values, refractory)  # type: ignore[arg-type]
    if has_part(path, meta, "rate"):
        model, values = _restore_outcome_part(path, meta, "rate", RateConfig, reward_model.RateModel, ae_cfg)
        rate = reward_model.RateHead(model, values)  # type: ignore[arg-type]
    return WorldModel(
        ae,
        dyn,
        latent_mean=meta["latent_mean"],
        latent_std=meta["latent_std"],
        action_names=meta["action_names"],
        fps=meta["fps"],
        meta=meta,
        prompts=prompts,
        reward=reward,
        rate=rate,
    )
