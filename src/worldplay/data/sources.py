"""Gameplay sources (the built-in toy world, any Atari game) and the policies that play them.

A source is a game: ``reset(seed) -> frame`` and ``step(action) -> (frame, reward,
terminated, truncated)``, frames uint8 [H, W, 3]. A policy maps the frame it sees to
an action index. ``make_source("toy" | "toy:push" | "ale:Boxing")`` and
``make_policy("random" | "sticky" | "human" | "pkg.module:fn", ...)`` build them
from the command-line names.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Protocol

import numpy as np
from PIL import Image

from worldplay.errors import WorldplayError

StepResult = tuple[np.ndarray, float, bool, bool]


class Source(Protocol):
    action_names: tuple[str, ...]
    frame_shape: tuple[int, int, int]
    fps: float

    def reset(self, seed: int) -> np.ndarray: ...
    def step(self, action: int) -> StepResult: ...
    def metadata(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class StopRecording(Exception):
    """Raised by an interactive policy when the person asks to stop (Esc, closing the window)."""


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB frame to ``(H, W)`` with a box (area-average) filter; no-op if already that size.

    The box filter averages every source pixel that falls in a target pixel, which
    keeps thin sprites visible when Atari's 210x160 frames shrink to 64x64.
    """
    h, w = size
    if frame.shape[:2] == (h, w):
        return frame
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BOX))


# ---------------------------------------------------------------------------
# The toy world
# ---------------------------------------------------------------------------


class ToyGame:
    """A small deterministic game in numpy, the fixture for every learning test.

    64x64 frames. A yellow 12 px player square moves 8 px per frame in the direction of
    the action and is stopped by grey walls; a red ball flies on its own and bounces
    off walls (so its next position needs the history, not just the last frame);
    the background scrolls one pixel to the left every frame. Touching the ball
    gives reward 1, respawns it and adds a white mark to the score in the top wall;
    the step after the ``touches_to_end``-th touch ends the game (terminated, reward 0),
    so the end can be seen coming in the frames. Everything is fixed by the seed.

    ``ToyGame(push=True)`` (source ``toy:push``) is the variant the toy agent ranking is measured on: a
    touch has one future. The background stands still, the ball is as big as the player, and walking
    into the ball pushes it (reward 1, a mark): it is placed just beyond the player's far edge and flies
    on in that direction; where a wall leaves it no room the player is stopped and nothing scores. The
    ball bounces off the player as off a wall. Nothing random happens after the reset.
    """

    ACTIONS = ("NOOP", "UP", "DOWN", "LEFT", "RIGHT")
    _MOVES: ClassVar[dict[int, tuple[int, int]]] = {0: (0, 0), 1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}  # (dy, dx)
    SIZE = 64
    PLAYER = 12
    BALL = 8  # one latent cell of an 8x-downsampling autoencoder: small enough to chase, big enough to be seen
    SPEED = 8
    WALL = (96, 96, 104)
    PLAYER_COLOR = (250, 220, 40)
    BALL_COLOR = (230, 40, 40)
    MARK_COLOR = (255, 255, 255)

    def __init__(self, size: int = 64, max_steps: int = 1000, touches_to_end: int = 8, push: bool = False):
        if not 1 <= touches_to_end <= 8:
            raise WorldplayError(
                f"toy game: touches_to_end must be in 1..8 (the marks fit the wall), got {touches_to_end}"
            )
        self.action_names = self.ACTIONS
        self.frame_shape = (size, size, 3)
        self.fps = 15.0
        self.max_steps = max_steps
        self.touches_to_end = touches_to_end
        self.push = push
        self.ball_size = self.PLAYER if push else self.BALL
        self._out_size = size
        self.reset(0)

    def metadata(self) -> dict[str, Any]:
        name = "toy:push" if self.push else "toy"
        return {"source": name, "game": name, "frameskip": 1, "fps": self.fps}

    def close(self) -> None:
        pass

    def clone_state(self) -> dict[str, Any]:
        """The whole game state (a copy), for :meth:`restore_state`."""
        return copy.deepcopy(self.__dict__)

    def restore_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(copy.deepcopy(state))

    # -- level -----------------------------------------------------------------
    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        self._rng = rng
        S = self.SIZE
        # Background: two-colour diagonal stripes, twice as wide so a scrolling
        # 64-pixel view is a slice (no per-pixel noise: it is incompressible, and
        # would cap any autoencoder's PSNR near 31 dB without telling anything).
        c0 = rng.integers(10, 60, 3)
        c1 = rng.integers(40, 110, 3)
        yy, xx = np.mgrid[0:S, 0 : 2 * S]
        period = int(rng.choice([16, 32]))  # stripes 8 or 16 px wide
        stripes = ((xx + yy) // (period // 2)) % 2
        self._tex = np.where(stripes[..., None] == 1, c1, c0).astype(np.uint8)
        # Walls: a border and a few blocks.
        wall = np.zeros((S, S), bool)
        wall[:4], wall[-4:], wall[:, :4], wall[:, -4:] = True, True, True, True
        for _ in range(int(rng.integers(2, 5))):
            h, w = int(rng.integers(4, 13)), int(rng.integers(4, 13))
            y, x = int(rng.integers(8, S - 8 - h)), int(rng.integers(8, S - 8 - w))
            wall[y : y + h, x : x + w] = True
        self._wall = wall
        self._wall_idx = np.nonzero(wall)
        self._player = self._free_spot(self.PLAYER)
        self._ball = self._free_spot(self.ball_size)
        while self.push and self._overlap(self._player, self.PLAYER, self._ball, self.ball_size):
            self._ball = self._free_spot(self.ball_size)
        self._ball_v = np.array([rng.choice([-2, -1, 1, 2]), rng.choice([-2, 2])])
        self._t = 0
        self._touches = 0
        return self._render()

    def _free_spot(self, size: int) -> np.ndarray:
        while True:
            pos = self._rng.integers(4, self.SIZE - 4 - size, 2)
            if not self._hits_wall(pos, size):
                return pos

    def _hits_wall(self, pos: np.ndarray, size: int) -> bool:
        y, x = int(pos[0]), int(pos[1])
        if y < 0 or x < 0 or y + size > self.SIZE or x + size > self.SIZE:
            return True  # outside the frame counts as wall (a negative slice start would wrap around)
        return bool(self._wall[y : y + size, x : x + size].any())

    # -- dynamics --------------------------------------------------------------
    def step(self, action: int) -> StepResult:
        if not 0 <= int(action) < len(self.ACTIONS):
            raise WorldplayError(f"toy game: action {action} out of range [0, {len(self.ACTIONS)})")
        if self._touches >= self.touches_to_end:  # game over: the frame with the last mark was the last one
            self._t += 1
            return self._render(), 0.0, True, False
        dy, dx = self._MOVES[int(action)]
        P, B = self.PLAYER, self.ball_size
        reward = 0.0
        for s in range(self.SPEED, 0, -1):  # move as far as the walls (and, pushing, a blocked ball) allow
            nxt = self._player + np.array([dy * s, dx * s])
            if self._hits_wall(nxt, P):
                continue
            if self.push and self._overlap(nxt, P, self._ball, B):
                ball = self._ball.copy()  # pushed to just beyond the player's far edge, along the move
                if dy:
                    ball[0] = nxt[0] + (P if dy > 0 else -B)
                else:
                    ball[1] = nxt[1] + (P if dx > 0 else -B)
                if self._hits_wall(ball, B):
                    continue  # no room for the ball: the player stops short of it
                self._ball = ball
                axis, sign = (0, dy) if dy else (1, dx)
                self._ball_v[axis] = 2 * sign
                reward = 1.0
            self._player = nxt
            break
        # The ball moves on its own and bounces off walls (pushing: and off the player), one axis at a time.
        for axis in (0, 1):
            nxt = self._ball.copy()
            nxt[axis] += self._ball_v[axis]
            if self._hits_wall(nxt, B) or (self.push and self._overlap(nxt, B, self._player, P)):
                self._ball_v[axis] = -self._ball_v[axis]
            else:
                self._ball = nxt
        if not self.push and self._overlap(self._player, P, self._ball, B):  # a touch: the ball respawns
            reward = 1.0
            self._ball = self._free_spot(B)
        if reward:
            self._touches += 1
        self._t += 1
        return self._render(), reward, False, self._t >= self.max_steps

    @staticmethod
    def _overlap(p: np.ndarray, ps: int, q: np.ndarray, qs: int) -> bool:
        return bool(abs(int(p[0]) - int(q[0])) * 2 < ps + qs and abs(int(p[1]) - int(q[1])) * 2 < ps + qs)

    def _render(self) -> np.ndarray:
        S = self.SIZE
        off = 0 if self.push else self._t % S
        frame = self._tex[:, off : off + S].copy()
        frame[self._wall_idx] = self.WALL
        y, x = int(self._player[0]), int(self._player[1])
        frame[y : y + self.PLAYER, x : x + self.PLAYER] = self.PLAYER_COLOR
        frame[y + 2 : y + 4, x + 2 : x + 6] = (40, 30, 10)  # eyes, so the sprite has a face
        y, x = int(self._ball[0]), int(self._ball[1])
        frame[y : y + self.ball_size, x : x + self.ball_size] = self.BALL_COLOR
        for k in range(self._touches):  # the score: one mark per touch in the top wall
            frame[0:3, 8 + 6 * k : 12 + 6 * k] = self.MARK_COLOR
        if self._out_size != S:
            frame = resize_frame(frame, (self._out_size, self._out_size))
        return frame


# ---------------------------------------------------------------------------
# Atari through Gymnasium + ale-py
# ---------------------------------------------------------------------------


def ale_game_id(name: str) -> str:
    """``Boxing`` / ``Boxing-v5`` / ``ALE/Boxing-v5`` -> ``ALE/Boxing-v5``."""
    name = name.removeprefix("ALE/")
    if "-v" not in name:
        name += "-v5"
    return f"ALE/{name}"


class AleGame:
    """Any Atari game through Gymnasium's ALE environments, frames resized to ``size``.

    Frame skip and sticky actions are the ``-v5`` defaults unless given
    (frameskip 4, repeat_action_probability 0.25); fps is 60 / frameskip.
    """

    def __init__(
        self,
        game: str,
        size: tuple[int, int] = (64, 64),
        frameskip: int = 4,
        repeat_action_probability: float = 0.25,
        max_steps: int | None = None,
    ):
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        self.game_id = ale_game_id(game)
        try:
            self._env = gym.make(
                self.game_id,
                frameskip=frameskip,
                repeat_action_probability=repeat_action_probability,
                full_action_space=False,
                max_episode_steps=max_steps,
            )
        except gym.error.Error as e:
            raise WorldplayError(f"ale:{game}: no such Atari game ({e}); try e.g. ale:Boxing or ale:Pong") from e
        self.action_names = tuple(self._env.unwrapped.get_action_meanings())
        self.frame_shape = (int(size[0]), int(size[1]), 3)
        self.frameskip = frameskip
        self.repeat_action_probability = repeat_action_probability
        self.fps = 60.0 / frameskip

    def metadata(self) -> dict[str, Any]:
        return {
            "source": f"ale:{self.game_id}",
            "game": self.game_id,
            "frameskip": self.frameskip,
            "repeat_action_probability": self.repeat_action_probability,
            "fps": self.fps,
            "resize_filter": "box",
        }

    def _frame(self, obs: np.ndarray) -> np.ndarray:
        return resize_frame(obs, self.frame_shape[:2])

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self._env.reset(seed=int(seed))
        return self._frame(obs)

    def step(self, action: int) -> StepResult:
        obs, reward, terminated, truncated, _ = self._env.step(int(action))
        return self._frame(obs), float(reward), bool(terminated), bool(truncated)

    def close(self) -> None:
        self._env.close()

    def clone_state(self, include_rng: bool = True) -> Any:
        """The emulator's state for :meth:`restore_state`, with its random generator (sticky keys) unless
        ``include_rng`` is False: then a game restored to it keeps drawing its own sticky keys, so the same state
        plays on as another draw of the game's randomness."""
        return self._env.unwrapped.ale.cloneState(include_rng=include_rng)

    def restore_state(self, state: Any) -> None:
        self._env.unwrapped.ale.restoreState(state)


def make_source(
    spec: str, *, size: tuple[int, int] = (64, 64), frameskip: int = 4, max_steps: int | None = None
) -> Source:
    """Build a source from its command-line name: ``toy``, ``toy:push`` or ``ale:<GameId>``."""
    if spec in ("toy", "toy:push"):
        if size[0] != size[1]:
            raise WorldplayError(f"--source {spec} makes square frames; got --size {size[0]}x{size[1]}")
        return ToyGame(size=size[0], max_steps=max_steps or 1000, push=spec == "toy:push")
    if spec.startswith("ale:"):
        return AleGame(spec[4:], size=size, frameskip=frameskip, max_steps=max_steps)
    raise WorldplayError(
        f"--source {spec!r}: unknown source; use 'toy', 'toy:push' or 'ale:<GameId>' (e.g. ale:Boxing)"
    )
