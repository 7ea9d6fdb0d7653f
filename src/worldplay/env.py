"""Gymnasium environments around a world: ``WorldModelEnv`` (one stream) and ``WorldModelVectorEnv`` (B streams,
one batched world step), for agents that act inside a world.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from worldplay.errors import WorldplayError
from worldplay.world import WorldModel, WorldState, load_world

# -- ------------------------------------------------------------------------------------------
# Rewards and episode ends come from the world's reward model; a world without one gives reward 0.0 and never
# terminates, so an episode ends only by truncation (``max_episode_steps``).

Prompt = np.ndarray | str | Path  # an image [H, W, 3] uint8, an image file, or prompt frames [P, H, W, 3] uint8


def _prompt_frames(world: WorldModel, prompt: Prompt, what: str = "prompt") -> np.ndarray:
    """A prompt in any accepted form -> uint8 frames [P, H, W, 3] at the world's frame size (arrays must have it)."""
    shape = world.frame_shape
    size = f"{shape[0]}x{shape[1]} RGB {list(shape)}"
    if isinstance(prompt, str | Path):  # an image file is resized to the world's frames, as `play --prompt` does
        from worldplay.video import prompt_from_image

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


def _warn_without_reward(world: WorldModel) -> None:
    if not world.has_reward:
        warnings.warn(
            f"world {world.meta.get('name', '?')!r} has no reward model: rewards are 0 and episodes end only by "
            "truncation; add one with `worldplay train reward --config C --world FOLDER`",
            stacklevel=3,
        )


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


def _rate_reward(world: WorldModel, reward: str, num_envs: int) -> ExpectedRewards | None:
    if reward not in ("events", "rate"):
        raise WorldplayError(f"reward={reward!r}: use 'events' (the reward model's points) or 'rate' (expected ones)")
    if reward == "events":
        return None
    if not world.has_rate:
        raise WorldplayError(
            f"reward='rate': world {world.meta.get('name', '?')!r} has no rate model; add one with "
            "`worldplay train rate --config C --world FOLDER`, or use reward='events'"
        )
    return ExpectedRewards(world, num_envs)


class ExpectedRewards:
    """The rate model's expected reward of each step of B streams, as they are played: a rolling history of each
    stream's latents and keys (``rate.history + 1`` frames, the newest last), filled from a stream's prompt when it
    starts. ``step(actions, latents)`` gives ``world.expected_rewards_last`` of the step that the actions take on
    the newest frames, then appends the new latents."""

    def __init__(self, world: WorldModel, num_envs: int):
        assert world.rate is not None
        self.world = world
        self.length = world.rate.config.history + 1
        self.z = np.zeros((num_envs, self.length, *world.latent_shape), np.float32)  # filled by start()
        self.a = np.zeros((num_envs, self.length), np.int64)  # the key taken on each frame; the newest: not yet

    def start(self, mask: np.ndarray, frames: np.ndarray, actions: np.ndarray | None) -> None:
        """Fill the histories of the streams in ``mask`` [B] from their prompt frames [B, P, H, W, 3] and the
        actions between them [B, P - 1] (None: NOOP, index 0); a prompt shorter than the history is padded with
        its first frame and action repeated, as ``world.expected_rewards`` does before a stream's first frame."""
        rows = np.flatnonzero(mask)
        n, P = len(rows), frames.shape[1]
        z = np.asarray(self.world.encode(frames[rows].reshape(n * P, *frames.shape[2:])))
        z = z.reshape(n, P, *self.world.latent_shape)
        a = np.zeros((n, P), np.int64)
        if actions is not None and P > 1:
            a[:, : P - 1] = np.asarray(actions)[rows]
        keep = min(P, self.length)
        pad = self.length - keep
        z = np.concatenate([np.repeat(z[:, :1], pad, axis=1), z[:, P - keep :]], axis=1)
        a = np.concatenate([np.repeat(a[:, :1], pad, axis=1), a[:, P - keep :]], axis=1)  # the newest: 0, not yet
        self.z[rows], self.a[rows] = z, a

    def step(self, actions: np.ndarray, latents: Any) -> np.ndarray:
        """The expected reward of the step ``actions`` [B] take [B] (float64), and the new latents [B, h, w, C]
        appended to the histories."""
        self.a[:, -1] = actions
        expected = self.world.expected_rewards_last(self.z, self.a)
        self.z[:, :-1], self.z[:, -1] = self.z[:, 1:], np.asarray(latents, np.float32)  # shifted in place
        self.a[:, :-1], self.a[:, -1] = self.a[:, 1:], 0
        return expected.astype(np.float64)


class WorldModelEnv(gym.Env[np.ndarray, np.int64]):
    """A world as a Gymnasium environment: observations are the world's frames, actions its named actions.

        env = WorldModelEnv("checkpoints/boxing", max_episode_steps=200)
        obs, info = env.reset(seed=0)        # obs uint8 [H, W, 3]: the last prompt frame; info {"prompt_index": i}
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    Observation space ``Box(0, 255, world.frame_shape, uint8)``; action space
    ``Discrete(len(world.action_names))``, named by ``get_action_meanings()``.

    ``reward`` and ``terminated`` are the world's own predictions (its reward model,
    ``worldplay train reward``): the reward of the step (of the step ``world.reward.lag``
    steps before, for a reward model that reads frames past the point's, as the Boxing
    worlds' does: one step late), and whether the new frame is the episode's last. A
    world without a reward model gives reward 0.0 and never
    terminates, and says so once with a warning. ``truncated`` is True once
    ``max_episode_steps`` steps were taken.

    ``reset`` starts from ``options["prompt"]`` if given, else from the constructor's
    ``prompt``, else from one of the world's held-out prompt windows (with the
    actions recorded between its frames), chosen with ``self.np_random``; the
    sampling noise is seeded from ``self.np_random`` too, so ``reset(seed=s)``
    followed by the same actions gives the same frames. ``options["prompt_index"]``
    picks a held-out window. A prompt is an image file, an image [H, W, 3] uint8 or
    frames [P, H, W, 3] uint8 at the world's frame size (it is not resized).

    ``guidance`` (classifier-free guidance scale of the action) may be changed
    between steps; None uses the world's default.

    ``reward="rate"`` reports the world's rate model's expected reward of each step instead
    of the reward model's points (a dense reward, the reading ``eval-agents --score rate``
    sums; :class:`ExpectedRewards`); ``terminated`` still comes from the reward model.
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
        reward: str = "events",
    ):
        self.world = _as_world(world)
        self._rate = _rate_reward(self.world, reward, 1)
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
        _warn_without_reward(self.world)

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
        if self._rate is not None:
            self._rate.start(np.ones(1, np.bool_), frames[None], None if actions is None else np.asarray(actions)[None])
        self._frame = np.array(frames[-1])
        self._t = 0
        return self._frame.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Take ``action`` (an int in the action space) -> (frame uint8 [H, W, 3], reward, terminated, truncated,
        info)."""
        if self._state is None:
            raise WorldplayError("call reset() before step()")
        if not self.action_space.contains(action):
            raise WorldplayError(
                f"action {action!r} is not in the action space {self.action_space}; this world's actions are "
                + ", ".join(f"{i}={name}" for i, name in enumerate(self.action_names))
            )
        if self._rate is None:
            self._state, frame, reward, end = self.world.step_with_reward(self._state, int(action), self.guidance)
        else:
            self._state, frames, latents, _, ends = self.world.step_latent_with_reward(
                self._state, int(action), self.guidance
            )
            frame, end = np.asarray(frames)[0], bool(np.asarray(ends)[0])
            reward = self._rate.step(np.array([int(action)]), latents)[0]
        self._frame = np.array(frame)
        self._t += 1
        truncated = self.max_episode_steps is not None and self._t >= self.max_episode_steps
        return self._frame.copy(), float(reward), bool(end), bool(truncated) and not end, {"frame_index": self._t}

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

    Rewards and terminations are the world's predictions, as in ``WorldModelEnv`` (0.0
    and False without a reward model); truncations are True after ``max_episode_steps``
    steps. Autoreset is ``AutoresetMode.NEXT_STEP``: the step after a stream's episode
    ended ignores its action and returns its new start frame, reward 0, not ended.

    Each stream has its own episode: its own frame count, truncation and restart
    (``reset(options={"reset_mask": mask})`` restarts the masked streams alone, and
    autoreset restarts only the streams whose episode ended), so the autoreset loop
    of RL libraries works. The streams share one random key: the sampling noise of
    the B streams is one draw, and stream b is not the same random draw as a single
    ``WorldModelEnv`` reset with the same seed.

    Starts are drawn as in ``WorldModelEnv``: ``options["prompt"]`` (one prompt for
    every stream, or frames [B, P, H, W, 3]), else the constructor's ``prompt``, else
    a held-out prompt window per stream chosen with ``self.np_random``;
    ``options["prompt_index"]`` (an int or [B] ints) picks held-out windows.

    ``reward="rate"``: each stream's expected reward per step, as in ``WorldModelEnv``.
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
        reward: str = "events",
    ):
        from gymnasium.vector.utils import batch_space

        if isinstance(num_envs, bool) or int(num_envs) < 1:
            raise WorldplayError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.world = _as_world(world)
        self.num_envs = int(num_envs)
        self._rate = _rate_reward(self.world, reward, self.num_envs)
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
        self._t = np.zeros(self.num_envs, np.int64)  # steps of each stream's episode
        self._autoreset = np.zeros(self.num_envs, np.bool_)  # streams that restart at the next step
        _warn_without_reward(self.world)

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

    def _start(self, options: dict[str, Any], mask: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every stream, or those in ``mask`` (see the class docstring) -> (frames [B, H, W, 3], infos).

        The infos' ``_key`` arrays say which streams each entry is about (the restarted ones)."""
        B = self.num_envs
        given = options.get("prompt")
        frames, actions, infos = _choose_start(
            self.world, None if given is None else self._prompt_batch(given, "options['prompt']"),
            options.get("prompt_index"), self.prompt, self.np_random, batch=B,
        )  # fmt: skip
        if mask is None or self._state is None or mask.all():
            mask = np.ones(B, np.bool_)
            self._state = self.world.start(frames, actions, seed=int(self.np_random.integers(2**31 - 1)))
            self._frames = np.array(frames[:, -1])
        else:
            self._state = self.world.restart(self._state, mask, frames, actions)
            assert self._frames is not None
            self._frames[mask] = frames[mask, -1]
        if self._rate is not None:
            self._rate.start(mask, frames, actions)
        self._t[mask] = 0
        self._autoreset[mask] = False
        if isinstance(infos.get("prompt"), str):
            infos["prompt"] = np.full(B, infos["prompt"], dtype=object)
        infos = {**infos, **{f"_{k}": mask.copy() for k in infos}}
        return self._frames.copy(), infos

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every stream, or those of ``options["reset_mask"]`` (bool [B]) alone -> (frames uint8
        [B, H, W, 3]: the start frames of the restarted streams, the latest frames of the others; infos with
        "prompt_index" [B] or "prompt", and "_prompt_index" True for the restarted streams)."""
        super().reset(seed=seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise WorldplayError(f"reset_mask: expected {self.num_envs} booleans, got {mask!r}")
        return self._start(options, mask)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Take actions [B] -> (frames uint8 [B, H, W, 3], rewards float [B], terminations bool [B],
        truncations bool [B], infos {"frame_index": [B], ...}). A stream whose episode ended at the previous
        step restarts instead (its action is ignored; its frame is the new start, reward 0, not ended)."""
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
        restart = self._autoreset.copy()
        if restart.all():  # every stream restarts: no frame to generate
            obs, infos = self._start({}, restart)
            infos.update(frame_index=self._t.copy(), _frame_index=np.ones(B, np.bool_))
            return obs, np.zeros(B, np.float64), np.zeros(B, np.bool_), np.zeros(B, np.bool_), infos
        if self._rate is None:
            self._state, frames, rewards, ends = self.world.step_with_reward(
                self._state, acts.astype(np.int64), self.guidance
            )
        else:  # the rate model's expected rewards; the restarting streams' histories are refilled below
            self._state, frames, latents, _, ends = self.world.step_latent_with_reward(
                self._state, acts.astype(np.int64), self.guidance
            )
            rewards = self._rate.step(acts.astype(np.int64), latents)
        self._frames = np.array(frames)
        self._t += 1
        infos: dict[str, Any] = {}
        if restart.any():  # NEXT_STEP autoreset of the streams that ended at the previous step
            _, infos = self._start({}, restart)
        rewards = np.where(restart, 0.0, rewards).astype(np.float64)
        terminations = np.asarray(ends, np.bool_) & ~restart
        truncations = np.zeros(B, np.bool_)
        if self.max_episode_steps is not None:
            truncations = (self._t >= self.max_episode_steps) & ~restart & ~terminations
        self._autoreset = truncations | terminations
        infos.update(frame_index=self._t.copy(), _frame_index=np.ones(B, np.bool_))
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
