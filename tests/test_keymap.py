"""Keys to named actions, for Atari action sets and the toy game."""

from __future__ import annotations

import pytest

from worldplay.data.sources import ToyGame
from worldplay.errors import WorldplayError
from worldplay.keymap import Keymap, action_parts, parse_key_script

BOXING = tuple(
    [
        "NOOP",
        "FIRE",
        "UP",
        "RIGHT",
        "LEFT",
        "DOWN",
        "UPRIGHT",
        "UPLEFT",
        "DOWNRIGHT",
        "DOWNLEFT",
        "UPFIRE",
        "RIGHTFIRE",
        "LEFTFIRE",
        "DOWNFIRE",
        "UPRIGHTFIRE",
        "UPLEFTFIRE",
        "DOWNRIGHTFIRE",
        "DOWNLEFTFIRE",
    ]
)


def test_parts():
    assert action_parts("DOWNLEFTFIRE") == {"DOWN", "LEFT", "FIRE"}
    assert action_parts("NOOP") == frozenset()
    assert action_parts("JUMP") is None


@pytest.mark.parametrize(
    "held, name",
    [
        (set(), "NOOP"),
        ({"UP", "RIGHT"}, "UPRIGHT"),
        ({"FIRE"}, "FIRE"),
        ({"UP", "RIGHT", "FIRE"}, "UPRIGHTFIRE"),
        ({"UP", "DOWN"}, "NOOP"),
        ({"LEFT", "RIGHT", "DOWN"}, "DOWN"),
    ],
)
def test_boxing(held, name):
    assert BOXING[Keymap(BOXING).action(held)] == name


def test_fallbacks_without_diagonals_or_fire():
    km = Keymap(ToyGame.ACTIONS)
    assert ToyGame.ACTIONS[km.action({"UP", "RIGHT"})] == "RIGHT"
    assert ToyGame.ACTIONS[km.action({"FIRE", "LEFT"})] == "LEFT"
    assert ToyGame.ACTIONS[km.action({"FIRE"})] == "NOOP"


def test_overrides():
    km = Keymap(BOXING, {"FIRE": "DOWNFIRE"})
    assert BOXING[km.action({"FIRE"})] == "DOWNFIRE"
    with pytest.raises(WorldplayError, match="unknown control"):
        Keymap(BOXING, {"JUMP": "FIRE"})
    with pytest.raises(WorldplayError, match="unknown action 'KICK'"):
        Keymap(BOXING, {"FIRE": "KICK"})


def test_key_script():
    acts = parse_key_script("RIGHT*3, upright*2,FIRE,NOOP*0", BOXING)
    assert [BOXING[a] for a in acts] == ["RIGHT"] * 3 + ["UPRIGHT"] * 2 + ["FIRE"]
    with pytest.raises(WorldplayError, match=r"item 2 'JUMP\*2': unknown action 'JUMP'"):
        parse_key_script("UP,JUMP*2", BOXING)
    with pytest.raises(WorldplayError, match="repeat count 'x' is not an integer"):
        parse_key_script("UP*x", BOXING)
    with pytest.raises(WorldplayError, match="empty"):
        parse_key_script(" , ", BOXING)
