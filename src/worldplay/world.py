"""A trained world, stepped one frame at a time.

    world = load_world("checkpoints/boxing")
    state = world.start(frames[:4], actions[:3])          # prompt frames and the actions between them
    state, frame = world.step(state, action, guidance=1.5) # uint8 [H, W, 3]

One jitted function makes a frame: every denoising step (conditional and
unconditional predictions as one batch of two), the KV-cache update and the
decode. Its shapes are fixed: past frames live in a rolling cache of
``window - 1`` slots, so a world runs for any number of frames without
recompiling. The state is an immutable pytree, so keeping an old state forks the
world for free (rewind, counterfactual play).

``WorldModelEnv`` (one stream) and ``WorldModelVectorEnv`` (B streams, one batched
step) put a world behind the Gymnasium API, for agents that act inside it.

Dimension keys: B streams, S cache slots, N tokens per frame, L layers, H heads, K head size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from worldplay import diffusion
from worldplay.checkpoint import read_world_meta, restore_into, verify_files
from worldplay.config import AutoencoderConfig, DynamicsConfig, part_from_dict
from worldplay.errors import WorldplayError
from worldplay.models.autoencoder import Autoencoder
from worldplay.models.dynamics import Dynamics


@struct.dataclass
class WorldState:
    """Where a world (or B worlds) stands: the cached past and the random key."""

    cache_k: jax.Array  # [L, B, S*N, H, K] keys of past frames (not rotated)
    cache_v: jax.Array  # [L, B, S*N, H, K]
    slot_frame: jax.Array  # [S] int32: frame index held by each slot, -1 while empty
    frame_index: jax.Array  # [] int32: index of the next frame
    key: jax.Array  # PRNG key
    batched: bool = struct.field(pytree_node=False, default=False)

    @property
    def batch_size(self) -> int:
        return int(self.cache_k.shape[1])


def _past(dyn: Dynamics, state: WorldState, copies: int = 1) -> tuple[jax.Array, ...]:
    """Cached keys/values, their time positions relative to the next frame, and validity [B, S*N]."""
    N = dyn.tokens
    B = state.cache_k.shape[1]
    rel = (state.slot_frame - state.frame_index).astype(jnp.float32)  # [S], < 0
    pos = jnp.broadcast_to(jnp.repeat(rel, N), (B * copies, rel.shape[0] * N))
    valid = jnp.broadcast_to(jnp.repeat(state.slot_frame >= 0, N), pos.shape)
    k, v = state.cache_k, state.cache_v
    if copies > 1:
        k, v = jnp.concatenate([k] * copies, axis=1), jnp.concatenate([v] * copies, axis=1)
    return k, v, pos, valid


def fill(dyn: Dynamics, state: WorldState, z_BhwC: jax.Array, actions_B: jax.Array) -> WorldState:
    """Append a frame (clean normalised latents and the action that led to it) to the cache.

    The frame is first noised to the context level (``DynamicsConfig.context_noise_at_sampling``), against drift.
    """
    c = dyn.config.context_noise_at_sampling
    key, k_noise = jax.random.split(state.key)
    z_noisy = diffusion.add_noise(z_BhwC, jax.random.normal(k_noise, z_BhwC.shape), c)
    t = jnp.full(z_BhwC.shape[:1], c)
    _, k_new, v_new = dyn.step(z_noisy, t, actions_B, *_past(dyn, state))
    S = state.slot_frame.shape[0]
    slot = state.frame_index % S
    N = dyn.tokens
    return state.replace(
        cache_k=jax.lax.dynamic_update_slice_in_dim(state.cache_k, k_new, slot * N, axis=2),
        cache_v=jax.lax.dynamic_update_slice_in_dim(state.cache_v, v_new, slot * N, axis=2),
        slot_frame=state.slot_frame.at[slot].set(state.frame_index),
        frame_index=state.frame_index + 1,
        key=key,
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
def _compiled(ae_def: nnx.GraphDef, dyn_def: nnx.GraphDef) -> dict[str, Any]:
    """Jitted functions of split state, shared by every world of the same architecture."""

    def encode(ae_p, stats, frames):
        z = nnx.merge(ae_def, ae_p).encode(frames)
        return (z - stats[0]) / stats[1]

    def decode(ae_p, stats, z):
        return nnx.merge(ae_def, ae_p).decode(z * stats[1] + stats[0])

    def fill_fn(dyn_p, state, z, actions):
        return fill(nnx.merge(dyn_def, dyn_p), state, z, actions)

    def advance(dyn_p, state, actions, guidance):
        """The next frame's latents and the state after it, without the decode."""
        dyn = nnx.merge(dyn_def, dyn_p)
        state, z = generate(dyn, state, actions, guidance)
        return fill(dyn, state, z, actions), z

    def frame(ae_p, dyn_p, stats, state, actions, guidance):
        state, z = advance(dyn_p, state, actions, guidance)
        return state, decode(ae_p, stats, z), z

    return {
        "encode": jax.jit(encode),
        "decode": jax.jit(decode),
        "fill": jax.jit(fill_fn),
        "advance": jax.jit(advance),
        "frame": jax.jit(frame),  # no donation: the caller's state stays valid, so forking is free
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
        self._fns = _compiled(self._ae_def, self._dyn_def)

    # -- frames <-> latents --------------------------------------------------------
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
        return WorldState(
            cache_k=jnp.zeros(shape, jnp.float32),
            cache_v=jnp.zeros(shape, jnp.float32),
            slot_frame=jnp.full((S,), -1, jnp.int32),
            frame_index=jnp.zeros((), jnp.int32),
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
        B, P = z_BPhwC.shape[:2]
        state = self.empty_state(B, seed, batched=batched)
        prev = np.concatenate([np.full((B, 1), self._dyn.null_action), np.asarray(prompt_actions_BQ)[:, : P - 1]], 1)
        prev = prev.astype(np.int32)
        for p in range(P):
            state = self._fns["fill"](self._dyn_p, state, z_BPhwC[:, p], jnp.asarray(prev[:, p]))
        return state

    def step(self, state: WorldState, action: Any, guidance: float | None = None) -> tuple[WorldState, np.ndarray]:
        """Take ``action`` (an int, or [B] ints) at the latest frame -> (next state, next frame uint8).

        ``guidance`` scales the action's effect (classifier-free guidance);
        None uses the world's own default.
        """
        state, frames, _ = self.step_latent(state, action, guidance)
        frames = np.asarray(frames)
        return state, frames if state.batched else frames[0]

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
        acts = self._actions(action, state.batch_size, "action")
        g = jnp.float32(self.config.guidance if guidance is None else guidance)
        return self._fns["frame"](self._ae_p, self._dyn_p, self._stats, state, acts, g)

    def __repr__(self) -> str:
        return (
            f"WorldModel({self.meta.get('name', '?')}: {len(self.action_names)} actions, "
            f"frames {self.frame_shape}, {self.fps:g} fps, window {self.config.window})"
        )


def load_world(
    path: str | Path, *, sampling_steps: int | None = None, context_noise: float | None = None
) -> WorldModel:
    """Load a world folder (see ``worldplay.checkpoint``); it needs nothing else.

    ``sampling_steps`` and ``context_noise`` replace the world's own sampler settings
    (``dynamics.sampling_steps`` and the noise level of context frames at sampling).
    """
    path = Path(path)
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
    return WorldModel(
        ae,
        dyn,
        latent_mean=meta["latent_mean"],
        latent_std=meta["latent_std"],
        action_names=meta["action_names"],
        fps=meta["fps"],
        meta=meta,
        prompts=prompts,
    )


# -- Gymnasium environments ------------------------------------------------------------------------------------------
# A world model predicts frames, not rewards or episode ends: the environments below give reward 0.0 and never
# terminate; an episode ends only by truncation (``max_episode_steps``). Wrap them to add a task's reward.

Prompt = np.ndarray | str | Path  # an image [H, W, 3] uint8, an image file, or prompt frames [P, H, W, 3] uint8


def _prompt_frames(world: WorldModel, prompt: Prompt, what: str = "prompt") -> np.ndarray:
    """A prompt in any accepted form -> uint8 frames [P, H, W, 3] at the world's frame size (arrays must have it)."""
    shape = world.frame_shape
    size = f"{shape[0]}x{shape[1]} RGB {list(shape)}"
    if isinstance(prompt, str | Path):  # an image file is resized to the world's frames, as `play --prompt` does
        from worldplay.play import prompt_from_image

        return prompt_from_image(prompt, shape)
    given = np.asarray(prompt)
    frames = given[None] if given.ndim == 3 else given
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-3:] != shape or frames.shape[0] < 1:
        raise WorldplayError(
            f"{what}: expected a uint8 image {list(shape)} or frames [P, {', '.join(map(str, shape))}] "
            f"(this world's frames are {size}), got {given.dtype} {list(given.shape)}"
        )
    return frames


def _held_out(world: WorldModel, index: Any) -> tuple[np.ndarray, np.ndarray]:
    """Held-out prompt window(s) ``index`` (an int or [B] ints) -> (frames [.., P, H, W, 3], actions [.., P - 1])."""
    if world.prompts is None:
        raise WorldplayError(
            "this world has no prompt frames (no prompts.npz in its folder); pass prompt= (an image file, "
            "an image [H, W, 3] uint8 or frames [P, H, W, 3]) to the environment or options={'prompt': ...} to reset"
        )
    return world.held_out_prompt(index)


def _choose_start(
    world: WorldModel,
    given: np.ndarray | None,
    index: Any,
    default: np.ndarray | None,
    rng: np.random.Generator,
    batch: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Where an episode starts -> (prompt frames, the actions between them or None, info).

    ``given`` (prompt frames passed to reset), else the held-out window(s) ``index``, else ``default`` (the
    constructor's prompt), else held-out window(s) drawn with ``rng``: one (an int index) when ``batch`` is None,
    else ``batch`` of them (an index per stream).
    """
    if given is not None:
        return given, None, {"prompt": "given"}
    if index is None and default is not None:
        return default, None, {"prompt": "given"}
    if index is None:
        _held_out(world, 0)  # a clear error if the world has none
        index = rng.integers(len(world.prompts[0]), size=batch)
    index = int(index) if batch is None else np.broadcast_to(np.asarray(index), (batch,)).copy()
    frames, actions = _held_out(world, index)
    return frames, actions, {"prompt_index": index}


def _as_world(world: WorldModel | str | Path) -> WorldModel:
    return world if isinstance(world, WorldModel) else load_world(world)


def _check_max_steps(max_episode_steps: int | None) -> int | None:
    if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or int(max_episode_steps) < 1):
        raise WorldplayError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
    return None if max_episode_steps is None else int(max_episode_steps)


def _check_render_mode(render_mode: str | None) -> str | None:
    if render_mode is not None and render_mode != "rgb_array":
        raise WorldplayError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' or None")
    return render_mode


class WorldModelEnv(gym.Env[np.ndarray, np.int64]):
    """A world as a Gymnasium environment: observations are the world's frames, actions its named actions.

        env = WorldModelEnv("checkpoints/boxing", max_episode_steps=200)
        obs, info = env.reset(seed=0)        # obs uint8 [H, W, 3]: the last prompt frame; info {"prompt_index": i}
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    Observation space ``Box(0, 255, world.frame_shape, uint8)``; action space
    ``Discrete(len(world.action_names))``, named by ``get_action_meanings()``.

    A world model has no reward head and no notion of an episode's end: ``reward``
    is always 0.0 and ``terminated`` always False (wrap the env to add a task's
    reward); ``truncated`` is True once ``max_episode_steps`` steps were taken.

    ``reset`` starts from ``options["prompt"]`` if given, else from the constructor's
    ``prompt``, else from one of the world's held-out prompt windows (with the
    actions recorded between its frames), chosen with ``self.np_random``; the
    sampling noise is seeded from ``self.np_random`` too, so ``reset(seed=s)``
    followed by the same actions gives the same frames. ``options["prompt_index"]``
    picks a held-out window. A prompt is an image file, an image [H, W, 3] uint8 or
    frames [P, H, W, 3] uint8 at the world's frame size (it is not resized).

    ``guidance`` (classifier-free guidance scale of the action) may be changed
    between steps; None uses the world's default.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 15.0}  # noqa: RUF012 (per instance)

    def __init__(
        self,
        world: WorldModel | str | Path,
        *,
        prompt: Prompt | None = None,
        guidance: float | None = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
    ):
        self.world = _as_world(world)
        self.action_names: tuple[str, ...] = self.world.action_names
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": self.world.fps, "action_names": self.action_names}
        self.observation_space = gym.spaces.Box(0, 255, self.world.frame_shape, np.uint8)
        self.action_space = gym.spaces.Discrete(len(self.action_names))
        self.render_mode = _check_render_mode(render_mode)
        self.prompt = None if prompt is None else _prompt_frames(self.world, prompt)  # [P, H, W, 3]
        self.guidance = guidance
        self.max_episode_steps = _check_max_steps(max_episode_steps)
        self._state: WorldState | None = None
        self._frame: np.ndarray | None = None  # [H, W, 3] uint8, the latest observation
        self._t = 0

    def get_action_meanings(self) -> list[str]:
        """The name of each action, by index (as ALE environments have)."""
        return list(self.action_names)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode -> (last prompt frame uint8 [H, W, 3], {"prompt_index": i} or {"prompt": "given"})."""
        super().reset(seed=seed)
        options = options or {}
        world_seed = int(self.np_random.integers(2**31 - 1))  # drawn first, whatever the prompt
        given = options.get("prompt")
        frames, actions, info = _choose_start(
            self.world, None if given is None else _prompt_frames(self.world, given, "options['prompt']"),
            options.get("prompt_index"), self.prompt, self.np_random,
        )  # fmt: skip
        self._state = self.world.start(frames, actions, seed=world_seed)
        self._frame = np.array(frames[-1])
        self._t = 0
        return self._frame.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Take ``action`` (an int in the action space) -> (frame uint8 [H, W, 3], 0.0, False, truncated, info)."""
        if self._state is None:
            raise WorldplayError("call reset() before step()")
        if not self.action_space.contains(action):
            raise WorldplayError(
                f"action {action!r} is not in the action space {self.action_space}; this world's actions are "
                + ", ".join(f"{i}={name}" for i, name in enumerate(self.action_names))
            )
        self._state, frame = self.world.step(self._state, int(action), self.guidance)
        self._frame = np.array(frame)
        self._t += 1
        truncated = self.max_episode_steps is not None and self._t >= self.max_episode_steps
        return self._frame.copy(), 0.0, False, bool(truncated), {"frame_index": self._t}

    def render(self) -> np.ndarray | None:
        """The current frame uint8 [H, W, 3] (render_mode "rgb_array"); None without a render mode."""
        if self.render_mode is None:
            gym.logger.warn("render() without a render mode; create the env with render_mode='rgb_array'")
            return None
        if self._frame is None:
            raise WorldplayError("call reset() before render()")
        return self._frame.copy()

    def close(self) -> None:
        self._state = None


class WorldModelVectorEnv(gym.vector.VectorEnv):
    """B streams of a world stepped together: one batched ``world.step`` call per step for all B streams.

        envs = WorldModelVectorEnv("checkpoints/boxing", 8, max_episode_steps=200)
        obs, infos = envs.reset(seed=0)                      # obs uint8 [B, H, W, 3]
        obs, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())  # actions [B]

    Rewards are 0.0 and terminations False (a world model has no reward head, see
    ``WorldModelEnv``); truncations are True after ``max_episode_steps`` steps.
    Autoreset is ``AutoresetMode.NEXT_STEP``: the step after a truncation ignores the
    actions and returns the new start frames, reward 0, not terminated or truncated.

    The streams share one world state whose frame counter, cache slots and random
    key are common to the batch (only the KV cache has a batch axis), so streams
    cannot be restarted one at a time: every stream starts at the same time and,
    as they share ``max_episode_steps`` and never terminate, every stream truncates
    at the same step and all are restarted together. For the same reason the
    sampling noise of the B streams is one draw from one key: stream b is not the
    same random draw as a single ``WorldModelEnv`` reset with the same seed.

    Starts are drawn as in ``WorldModelEnv``: ``options["prompt"]`` (one prompt for
    every stream, or frames [B, P, H, W, 3]), else the constructor's ``prompt``, else
    a held-out prompt window per stream chosen with ``self.np_random``;
    ``options["prompt_index"]`` (an int or [B] ints) picks held-out windows.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (replaced per instance)
        "render_modes": ["rgb_array"],
        "render_fps": 15.0,
        "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        world: WorldModel | str | Path,
        num_envs: int,
        *,
        prompt: Prompt | None = None,
        guidance: float | None = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
    ):
        from gymnasium.vector.utils import batch_space

        if isinstance(num_envs, bool) or int(num_envs) < 1:
            raise WorldplayError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.world = _as_world(world)
        self.num_envs = int(num_envs)
        self.action_names: tuple[str, ...] = self.world.action_names
        self.metadata = {
            "render_modes": ["rgb_array"],
            "render_fps": self.world.fps,
            "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP,
            "action_names": self.action_names,
        }
        self.single_observation_space = gym.spaces.Box(0, 255, self.world.frame_shape, np.uint8)
        self.single_action_space = gym.spaces.Discrete(len(self.action_names))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = _check_render_mode(render_mode)
        self.prompt = None if prompt is None else self._prompt_batch(prompt, "prompt")  # [B, P, H, W, 3]
        self.guidance = guidance
        self.max_episode_steps = _check_max_steps(max_episode_steps)
        self._state: WorldState | None = None
        self._frames: np.ndarray | None = None  # [B, H, W, 3] uint8, the latest observations
        self._t = 0
        self._autoreset = False

    def get_action_meanings(self) -> list[str]:
        """The name of each action, by index (as ALE environments have)."""
        return list(self.action_names)

    def _prompt_batch(self, prompt: Prompt, what: str) -> np.ndarray:
        """One prompt for every stream, or frames [B, P, H, W, 3] -> frames [B, P, H, W, 3]."""
        arr = None if isinstance(prompt, str | Path) else np.asarray(prompt)
        if arr is not None and arr.ndim == 5:
            if arr.shape[0] != self.num_envs:
                raise WorldplayError(f"{what}: {arr.shape[0]} prompts for {self.num_envs} streams")
            return np.stack([_prompt_frames(self.world, p, what) for p in arr])
        frames = _prompt_frames(self.world, prompt, what)
        return np.repeat(frames[None], self.num_envs, axis=0)

    def _start(self, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every stream (see the class docstring) -> (start frames [B, H, W, 3], infos)."""
        B = self.num_envs
        world_seed = int(self.np_random.integers(2**31 - 1))
        given = options.get("prompt")
        frames, actions, infos = _choose_start(
            self.world, None if given is None else self._prompt_batch(given, "options['prompt']"),
            options.get("prompt_index"), self.prompt, self.np_random, batch=B,
        )  # fmt: skip
        self._state = self.world.start(frames, actions, seed=world_seed)
        self._frames = np.array(frames[:, -1])
        self._t = 0
        self._autoreset = False
        if isinstance(infos.get("prompt"), str):
            infos["prompt"] = np.full(B, infos["prompt"], dtype=object)
        infos = {**infos, **{f"_{k}": np.ones(B, np.bool_) for k in infos}}
        return self._frames.copy(), infos

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every stream -> (start frames uint8 [B, H, W, 3], infos with "prompt_index" [B] or "prompt")."""
        super().reset(seed=seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is not None and not np.all(mask):
            raise WorldplayError(
                "reset_mask: the streams of a WorldModelVectorEnv share one world state and restart together; "
                "reset all of them"
            )
        return self._start(options)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Take actions [B] -> (frames uint8 [B, H, W, 3], rewards float [B], terminations bool [B],
        truncations bool [B], infos {"frame_index": [B], ...}); after a truncation, restart instead."""
        if self._state is None:
            raise WorldplayError("call reset() before step()")
        acts = np.asarray(actions)
        if not (self.action_space.contains(acts) and np.issubdtype(acts.dtype, np.integer)):
            raise WorldplayError(
                f"actions {actions!r}: expected {self.num_envs} integers in 0..{len(self.action_names) - 1} "
                f"(action space {self.action_space}); this world's actions are "
                + ", ".join(f"{i}={name}" for i, name in enumerate(self.action_names))
            )
        B = self.num_envs
        rewards, terminations = np.zeros(B, np.float64), np.zeros(B, np.bool_)
        if self._autoreset:  # NEXT_STEP autoreset: every stream truncated on the last step
            obs, infos = self._start({})
            infos.update(frame_index=np.zeros(B, np.int64), _frame_index=np.ones(B, np.bool_))
            return obs, rewards, terminations, np.zeros(B, np.bool_), infos
        self._state, frames = self.world.step(self._state, acts.astype(np.int64), self.guidance)
        self._frames = np.array(frames)
        self._t += 1
        truncated = self.max_episode_steps is not None and self._t >= self.max_episode_steps
        truncations = np.full(B, truncated, np.bool_)
        self._autoreset = bool(truncated)
        infos = {"frame_index": np.full(B, self._t, np.int64), "_frame_index": np.ones(B, np.bool_)}
        return self._frames.copy(), rewards, terminations, truncations, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The current frame of each stream, uint8 [H, W, 3] each (render_mode "rgb_array")."""
        if self.render_mode is None:
            gym.logger.warn("render() without a render mode; create the env with render_mode='rgb_array'")
            return None
        if self._frames is None:
            raise WorldplayError("call reset() before render()")
        return tuple(np.array(f) for f in self._frames)

    def close_extras(self, **kwargs: Any) -> None:
        self._state = None
