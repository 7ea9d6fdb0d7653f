"""The toy agents: their order in the pushed-ball game, and the pusher stepping round a ball it cannot push."""

from __future__ import annotations

import functools

import numpy as np

from worldplay.agents import play_real, real_starts
from worldplay.data.sources import ToyGame
from worldplay.policies.toy import Pusher, Slow

TOY_AGENTS = ["worldplay.policies.toy:noop", "sticky", "worldplay.policies.toy:chase", "worldplay.policies.toy:pusher"]


@functools.cache
def _game_return(policy: str) -> float:
    """Mean return of ``policy`` over 16 starts (seed 0) of 60 frames of the pushed-ball game, played once per
    test session: the tests below share the start set and ``pusher``."""
    return float(play_real("toy:push", policy, _starts(), 60, progress=False).mean())


@functools.cache
def _starts() -> dict:
    return real_starts("toy:push", (64, 64), 16, 4, seed=0)


def test_toy_agents_score_apart_in_the_pushed_ball_game():
    """The agents the toy world is ranked on: a still player never pushes, held random keys push now and then,
    ``chase`` pushes but pins the ball on walls, ``pusher`` steps round it (16 starts of 60 frames: 0, 1.44,
    2.31, 3.69; the game is deterministic, so these are exact on any machine)."""
    returns = [_game_return(p) for p in TOY_AGENTS]
    assert returns[0] == 0.0, returns
    assert returns[0] < returns[1] < returns[2] < returns[3], returns
    assert returns[3] - returns[1] > 1.5, returns  # the best and the middle agent far apart, so a world can tell


def test_slowed_pushers_score_between_standing_still_and_pushing():
    """The same play at three speeds (``slower`` moves on every 4th frame, ``slow`` on every 2nd, ``pusher`` on
    every one) ranks by speed in the game (16 starts of 60 frames: 2.00, 2.88, 3.69; exact, the game is
    deterministic)."""
    ladder = ["worldplay.policies.toy:slower", "worldplay.policies.toy:slow", "worldplay.policies.toy:pusher"]
    returns = [_game_return(p) for p in ladder]
    assert 0.0 < returns[0] < returns[1] < returns[2], returns


def _frame(player: tuple[int, int], ball: tuple[int, int]) -> np.ndarray:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:4], frame[:, :4] = ToyGame.WALL, ToyGame.WALL
    for (y, x), colour in ((player, ToyGame.PLAYER_COLOR), (ball, ToyGame.BALL_COLOR)):
        frame[y : y + 12, x : x + 12] = colour
    return frame


def test_pusher_steps_round_a_ball_pinned_on_a_wall():
    pusher = Pusher()
    below = _frame(player=(16, 10), ball=(4, 10))  # the ball against the top wall, the player just below it
    assert pusher(below) == "UP"  # walks at it
    assert [pusher(below) for _ in range(2)] == ["RIGHT", "RIGHT"]  # nothing moved: sidestep towards the centre
    assert pusher(_frame(player=(16, 34), ball=(4, 10))) == "LEFT"  # moved: at the ball again, now from the side
    pusher.reset(0)
    assert pusher(_frame(player=(40, 50), ball=(40, 20))) == "LEFT"
    assert pusher(np.zeros((64, 64, 3), np.uint8)) == "NOOP"  # nothing to see: stand still


def test_slow_moves_on_every_second_frame_and_stands_still_between():
    slow = Slow()
    frame = _frame(player=(40, 50), ball=(40, 20))
    # it moves on frames 2 and 4; the frame it moved on did not change, so the second move is a sidestep
    assert [slow(frame) for _ in range(4)] == ["NOOP", "LEFT", "NOOP", "UP"]
    slow.reset(0)
    assert [slow(frame) for _ in range(2)] == ["NOOP", "LEFT"]
