"""The reference Boxing agents: they see the boxers, act with Boxing's action names, keep their own state per
stream, and differ in skill in the real game."""

from __future__ import annotations

import numpy as np
import pytest

from worldplay.data.sources import make_source
from worldplay.policies import make_policy
from worldplay.policies.boxing import REFERENCE, boxers


@pytest.fixture(scope="module")
def game():
    source = make_source("ale:Boxing", max_steps=10**9)
    yield source
    source.close()


def _play(game, spec: str, steps: int = 300, seed: int = 0) -> tuple[float, list[int]]:
    policy = make_policy(spec, game.action_names)
    frame = game.reset(seed)
    policy.reset(seed)
    total, actions = 0.0, []
    for _ in range(steps):
        a = policy(frame)
        actions.append(a)
        frame, reward, terminated, _ = game.step(a)
        total += reward
        if terminated:
            break
    return total, actions


def _first_moves_facing_an_opponent_to_the_right(policy, seeds: int = 40) -> list:
    """The first action of ``policy`` reset to each of ``seeds`` seeds, on a frame with the player (white) on the left
    and the opponent (black) far to its right, in line."""
    frame = np.full((64, 64, 3), 120, np.uint8)
    frame[30:34, 12:15] = 255
    frame[30:34, 48:51] = 0
    moves = []
    for seed in range(seeds):
        policy.reset(seed)
        moves.append(policy(frame))
    return moves


def test_the_boxers_are_found_where_the_game_puts_them(game):
    me, other = boxers(game.reset(0))
    assert me is not None and other is not None
    assert me[1] < other[1]  # the player (white) starts on the left, the opponent (black) on the right
    assert boxers(np.zeros((64, 64, 3), np.uint8) + 120) == (None, None)


@pytest.mark.parametrize("name", REFERENCE)
def test_every_reference_agent_acts_with_the_games_actions(game, name):
    _, actions = _play(game, f"worldplay.policies.boxing:{name}", steps=40)
    assert all(0 <= a < len(game.action_names) for a in actions)


def test_stateful_agents_get_one_instance_per_stream(game):
    a = make_policy("worldplay.policies.boxing:sticky", game.action_names)
    b = make_policy("worldplay.policies.boxing:sticky", game.action_names)
    a.reset(1)
    b.reset(2)
    frame = game.reset(0)
    first = [a(frame) for _ in range(30)]
    b_actions = [b(frame) for _ in range(30)]
    a.reset(1)
    assert [a(frame) for _ in range(30)] == first  # b's calls did not disturb a: each has its own state
    assert first != b_actions


def test_skill_differs_in_the_real_game(game):
    chase, _ = _play(game, "worldplay.policies.boxing:chase")
    retreat, _ = _play(game, "worldplay.policies.boxing:retreat")
    assert chase - retreat >= 5, (chase, retreat)  # the one who punches scores, the one who runs is hit


def test_brawl_mixes_held_keys_with_attacks_that_close_in_and_punch(game):
    """The rate model's training play: over an episode's start it holds keys (long runs of one action) and
    attacks (it closes in on the opponent and punches), reproducibly per seed."""
    _, actions = _play(game, "worldplay.policies.boxing:brawl", steps=600, seed=3)
    _, again = _play(game, "worldplay.policies.boxing:brawl", steps=600, seed=3)
    assert actions == again
    names = [game.action_names[a] for a in actions]
    assert sum("FIRE" in n for n in names) > 60  # it punches
    runs = np.diff(np.flatnonzero(np.diff(actions) != 0))
    assert runs.max() >= 20  # and holds a key for long stretches
    # in an attack it walks towards an opponent far to its right (here: a segment seeded to attack)
    policy = make_policy("worldplay.policies.boxing:brawl", game.action_names)
    moves = [game.action_names[a] for a in _first_moves_facing_an_opponent_to_the_right(policy)]
    right = sum(m in ("RIGHT", "RIGHTFIRE") for m in moves)  # attacks, and 2 of 18 held keys
    left = sum("LEFT" in m for m in moves)  # held keys only (6 of 18)
    assert right >= 12 and left < right / 2, moves  # about half the segments attack, all of them rightwards


def test_a_brawl_subclass_sets_its_share_of_attacks(game):
    """A user's recording policy subclasses brawl with its own ATTACK share (docs/agents.md, press): with 1 every
    segment attacks, so from every seed it walks towards an opponent far to its right; with 0 none does."""
    from worldplay.policies.boxing import brawl

    attacks = _first_moves_facing_an_opponent_to_the_right(type("attacker", (brawl,), {"ATTACK": 1.0})())
    assert sum(m in ("RIGHT", "RIGHTFIRE") for m in attacks) == 40, attacks
    holds = _first_moves_facing_an_opponent_to_the_right(type("holder", (brawl,), {"ATTACK": 0.0})())
    assert sum(m in ("RIGHT", "RIGHTFIRE") for m in holds) <= 8, holds  # held keys only: 2 of 18 go right
