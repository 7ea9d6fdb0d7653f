"""Reference agents for Atari Boxing, of clearly different skill, that read only the 64x64 frame.

    worldplay rollout boxing --policy worldplay.policies.boxing:chase --episodes 8 --out rollouts/chase
    worldplay record --source ale:Boxing --policy worldplay.policies.boxing:retreat --episodes 2 --out data/r

Templates for your own agents: a function ``frame uint8 [64, 64, 3] -> action name`` (stateless), or a class
whose instances are such callables with ``reset(seed)`` (one instance per stream: use a class when the agent
keeps state). Boxing's actions are the full Atari set: NOOP, FIRE, the 8 directions (UP, UPRIGHT, ...) and
each direction with FIRE (UPFIRE, ...).

The agents find the boxers by colour inside the ring: the player is white, the opponent black (see
:func:`boxers`). Over 300 frames (20 s) from the start of a real game they score, best first: ``chase``
(lines up beside the opponent and punches in reach), ``random``, ``sticky``, ``jab``, ``punch`` and ``retreat``
(runs away and never punches; the opponent scores freely).
"""

from __future__ import annotations

import numpy as np

# the inside of the ring in a 64x64 frame (rows, columns): the score and clock above it and the black bar at
# the left edge stay out of the colour masks
RING_ROWS = slice(8, 57)
RING_COLS = slice(9, 56)


def boxers(frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(player, opponent) centres as (row, column) in the frame, None where a boxer is not seen."""
    ring = np.asarray(frame, np.int32)[RING_ROWS, RING_COLS]
    out = []
    for mask in (ring.min(axis=-1) > 150, ring.max(axis=-1) < 40):  # white, black
        ys, xs = np.nonzero(mask)
        out.append(None if len(ys) < 4 else np.array([ys.mean() + RING_ROWS.start, xs.mean() + RING_COLS.start]))
    return out[0], out[1]


def _name(vertical: str, horizontal: str, fire: bool) -> str:
    """ALE's name of a direction (either part may be empty) with or without FIRE: ``UPRIGHTFIRE``, ``FIRE``."""
    name = vertical + horizontal + ("FIRE" if fire else "")
    return name or "NOOP"


def _towards(delta: float, slack: float, minus: str, plus: str) -> str:
    return "" if abs(delta) <= slack else (plus if delta > 0 else minus)


def punch(frame: np.ndarray) -> str:
    """Stands still and punches every frame."""
    return "FIRE"


def jab(frame: np.ndarray) -> str:
    """Lines up with the opponent vertically and punches from wherever it stands."""
    me, other = boxers(frame)
    if me is None or other is None:
        return "FIRE"
    return _name(_towards(other[0] - me[0], 1.5, "UP", "DOWN"), "", True)


def chase(frame: np.ndarray) -> str:
    """Closes in to punching distance beside the opponent, lined up, and punches when in reach."""
    me, other = boxers(frame)
    if me is None or other is None:
        return "FIRE"
    dy, dx = other - me
    vertical = _towards(dy, 0.5, "UP", "DOWN")
    horizontal = ""
    if abs(dx) > 14:
        horizontal = "RIGHT" if dx > 0 else "LEFT"
    elif abs(dx) < 4:
        horizontal = "LEFT" if dx > 0 else "RIGHT"  # too close to land a punch: step back
    return _name(vertical, horizontal, abs(dy) <= 3 and abs(dx) <= 14)


def retreat(frame: np.ndarray) -> str:
    """Keeps away from the opponent and never punches."""
    me, other = boxers(frame)
    if me is None or other is None:
        return "NOOP"
    dy, dx = other - me
    return _name("UP" if dy > 0 else "DOWN", "LEFT" if dx > 0 else "RIGHT", False)


ACTIONS = (
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
    "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE",
)  # fmt: skip


class random:  # named as it is used: --policy worldplay.policies.boxing:random
    """A uniformly random action every frame."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 11])

    def __call__(self, frame: np.ndarray) -> str:
        return ACTIONS[int(self._rng.integers(len(ACTIONS)))]


class sticky(random):
    """A random action held for 1 to 15 frames, as the data of the shipped worlds was recorded."""

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self._action, self._left = "NOOP", 0

    def __call__(self, frame: np.ndarray) -> str:
        if self._left == 0:
            self._action = super().__call__(frame)
            self._left = int(self._rng.integers(1, 16))
        self._left -= 1
        return self._action


REFERENCE = ("random", "sticky", "punch", "jab", "chase", "retreat")  # every reference agent, by name


class brawl(random):
    """Training play for a rate model, not a reference agent: broad play in which a boxer also attacks.

    Segments of 1 to 120 frames, each at random either a key held (as the ``hold`` recording policy) or an
    attack with its own random parameters: close to a random horizontal gap (0 to 24 px) beside the
    opponent, line up within a random slack (0.5 to 6 px) and punch on a random share of frames. Attacks of
    every quality, good and bad, so that a model of the rate of points sees what standing close and punching
    first brings, not only what standing close and being hit does (docs/agents.md).

        worldplay record --source ale:Boxing --policy worldplay.policies.boxing:brawl --episodes 20 --out data/b
    """

    GAP, SLACK, FIRE = (0.0, 24.0), (0.5, 6.0), (0.0, 1.0)  # the ranges an attack's parameters are drawn from
    ATTACK = 0.5  # the share of segments that are attacks (a subclass sets its own, as brawl_close its ranges)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 13])
        self._left = 0

    def __call__(self, frame: np.ndarray) -> str:
        rng = self._rng
        if self._left == 0:
            self._left = int(rng.integers(1, 121))
            self._attack = bool(rng.random() < self.ATTACK)
            self._key = ACTIONS[int(rng.integers(len(ACTIONS)))]
            self._gap, self._slack, self._fire = (rng.uniform(*r) for r in (self.GAP, self.SLACK, self.FIRE))
        self._left -= 1
        me, other = boxers(frame)
        if not self._attack or me is None or other is None:
            return self._key
        dy, dx = other - me
        toward, away = ("RIGHT", "LEFT") if dx > 0 else ("LEFT", "RIGHT")
        horizontal = _towards(abs(dx) - self._gap, 2.0, away, toward)
        return _name(_towards(dy, self._slack, "UP", "DOWN"), horizontal, bool(rng.random() < self._fire))


class brawl_close(brawl):
    """``brawl`` with attacks drawn nearer to punching reach (gap 2 to 16 px, slack 0.5 to 4 px, punching on
    20 to 100% of frames): more of its attacks land."""

    GAP, SLACK, FIRE = (2.0, 16.0), (0.5, 4.0), (0.2, 1.0)
