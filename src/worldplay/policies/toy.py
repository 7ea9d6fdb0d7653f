"""Reference agents for the built-in toy game, of clearly different skill, that read only the frame.

    worldplay eval-agents runs/toy/dynamics/world --env toy --policies worldplay.policies.toy:noop,random,\
worldplay.policies.toy:chase --out eval/toy-agents

The player is the yellow square, the ball the red one; touching the ball scores 1. ``chase`` walks
straight at the ball, ``noop`` stands still (the ball sometimes flies into it), ``avoid`` walks away
from the ball.
"""

from __future__ import annotations

import numpy as np

from worldplay.data.sources import ToyGame


def _centre(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray | None:
    """(row, column) centre of the pixels within 60 of ``colour`` (per channel), None if fewer than 4."""
    near = np.all(np.abs(np.asarray(frame, np.int32) - np.asarray(colour)) < 60, axis=-1)
    ys, xs = np.nonzero(near)
    return None if len(ys) < 4 else np.array([ys.mean(), xs.mean()])


def _towards(frame: np.ndarray, sign: int) -> str:
    player, ball = _centre(frame, ToyGame.PLAYER_COLOR), _centre(frame, ToyGame.BALL_COLOR)
    if player is None or ball is None:
        return "NOOP"
    dy, dx = sign * (ball - player)
    if abs(dy) >= abs(dx):
        return "DOWN" if dy > 0 else "UP"
    return "RIGHT" if dx > 0 else "LEFT"


def chase(frame: np.ndarray) -> str:
    """Walk at the ball along the axis where it is farther."""
    return _towards(frame, +1)


def avoid(frame: np.ndarray) -> str:
    """Walk away from the ball."""
    return _towards(frame, -1)


def noop(frame: np.ndarray) -> str:
    """Stand still."""
    return "NOOP"
