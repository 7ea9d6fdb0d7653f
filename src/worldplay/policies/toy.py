"""Reference agents for the built-in toy game, of clearly different skill, that read only the frame.

    worldplay eval-agents runs/toy/dynamics/world --env toy --policies worldplay.policies.toy:noop,random,\
worldplay.policies.toy:chase --out eval/toy-agents

The player is the yellow square, the ball the red one; touching the ball scores 1. ``chase`` walks
straight at the ball, ``noop`` stands still (the ball sometimes flies into it), ``avoid`` walks away
from the ball. ``pusher`` (a class: it remembers the last frame) chases like ``chase`` but steps round the
ball when a step moved nothing, so in ``toy:push`` it does not pin the ball against a wall, where pushes stop.
``slow`` is ``pusher`` moving on every 2nd frame only, ``slower`` on every 4th: the same play at a lower skill.
"""

from __future__ import annotations

import numpy as np

from worldplay.data.sources import ToyGame


def _centre(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray | None:
    """(row, column) centre of the pixels within 60 of ``colour`` (per channel), None if fewer than 4."""
    near = np.all(np.abs(np.asarray(frame, np.int32) - np.asarray(colour)) < 60, axis=-1)
    ys, xs = np.nonzero(near)
    return None if len(ys) < 4 else np.array([ys.mean(), xs.mean()])


def _step(player: np.ndarray, ball: np.ndarray, sign: int) -> str:
    """The move towards (sign +1) or away from (-1) the ball, along the axis where it is farther."""
    dy, dx = sign * (ball - player)
    if abs(dy) >= abs(dx):
        return "DOWN" if dy > 0 else "UP"
    return "RIGHT" if dx > 0 else "LEFT"


def _towards(frame: np.ndarray, sign: int) -> str:
    player, ball = _centre(frame, ToyGame.PLAYER_COLOR), _centre(frame, ToyGame.BALL_COLOR)
    if player is None or ball is None:
        return "NOOP"
    return _step(player, ball, sign)


def chase(frame: np.ndarray) -> str:
    """Walk at the ball along the axis where it is farther."""
    return _towards(frame, +1)


def avoid(frame: np.ndarray) -> str:
    """Walk away from the ball."""
    return _towards(frame, -1)


class Pusher:
    """Walk at the ball; when the last step moved the player less than 2 px (a wall, or a ball with no room to be
    pushed), step for 2 frames along the other axis, towards the frame's centre, to come at the ball from the side.
    """

    SIDESTEP = 2

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, seed: int) -> None:
        self._last: np.ndarray | None = None
        self._side = 0
        self._side_move = "NOOP"

    def __call__(self, frame: np.ndarray) -> str:
        player, ball = _centre(frame, ToyGame.PLAYER_COLOR), _centre(frame, ToyGame.BALL_COLOR)
        if player is None or ball is None:
            self._last = player
            return "NOOP"
        stuck = self._last is not None and np.abs(player - self._last).max() < 2
        self._last = player
        dy, dx = ball - player
        if stuck and self._side == 0:
            self._side = self.SIDESTEP
            if abs(dy) >= abs(dx):  # was walking vertically: sidestep horizontally
                self._side_move = "RIGHT" if player[1] < frame.shape[1] / 2 else "LEFT"
            else:
                self._side_move = "DOWN" if player[0] < frame.shape[0] / 2 else "UP"
        if self._side > 0:
            self._side -= 1
            return self._side_move
        return _step(player, ball, +1)


pusher = Pusher  # ``--policy worldplay.policies.toy:pusher``


class Slow(Pusher):
    """``pusher`` that moves on every ``EVERY``-th frame and stands still on the others (its last-step check
    compares the frames it moved on)."""

    EVERY = 2

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self._frames = 0

    def __call__(self, frame: np.ndarray) -> str:
        self._frames += 1
        return super().__call__(frame) if self._frames % self.EVERY == 0 else "NOOP"


class Slower(Slow):
    """``pusher`` on every 4th frame."""

    EVERY = 4


slow, slower = Slow, Slower  # ``--policy worldplay.policies.toy:slow``


def noop(frame: np.ndarray) -> str:
    """Stand still."""
    return "NOOP"
