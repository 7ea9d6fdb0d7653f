"""The toy world's reward model learned the game's touches; agents play in the shipped toy world and in the game."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldplay.agents import evaluate_agents
from worldplay.checkpoint import resolve_world
from worldplay.cli import main
from worldplay.data.format import open_dataset
from worldplay.evaluate import held_out_episodes, reward_evaluation
from worldplay.world import load_world

# F1 of the touch events (reward +1) on held-out real transitions, a predicted touch counting within one frame
# of the real one. A touch is plain in the frames (the ball vanishes and reappears elsewhere, a score mark
# appears), but a model that learned nothing scores about 0: predicting "never" gives 0, guessing at the base
# rate (4% of frames) about 0.04. The fixture's reward stage (500 steps of batch 64) found 66 of the 68 held-out
# touches and no false one on this CPU (F1 0.985; at 800 steps 1.0, and 0.994 on 12 toy episodes recorded with other
# seeds); the threshold leaves room for runs that differ in floating-point order.
MIN_TOUCH_F1 = 0.8
RANKED = ["worldplay.policies.toy:noop", "sticky", "worldplay.policies.toy:pusher"]


@pytest.mark.slow
def test_reward_model_learns_the_touches_of_the_toy_game(toy_world_run):
    world = load_world(toy_world_run["world"])
    assert world.has_reward
    ds = open_dataset(toy_world_run["dataset"])
    episodes, how = held_out_episodes(world, ds)
    assert "held-out split" in how
    r = reward_evaluation(world, ds, episodes)
    assert r["positive"]["real"] > 20, r  # enough touches to measure
    assert r["positive"]["f1"] >= MIN_TOUCH_F1, r
    assert r["negative"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "predicted": 0, "real": 0}, r
    assert r["return_per_window"]["count"] == 0  # the toy's episodes are shorter than the 300-frame windows
    ep = r["return_per_episode"]
    # returns of 3 to 6 per episode; a model that never predicts a touch would be off by about 4.6
    assert ep["count"] == len(episodes) and ep["mean_abs_error"] < 1.0, r


@pytest.mark.slow
def test_eval_agents_plays_toy_agents_in_the_shipped_toy_world_and_in_the_game(tmp_path, capsys, optimised):
    """End to end on the shipped pushed-ball world (trained on 2 cores by ``configs/toy-push.toml``, sampling with
    context noise 0.1): three toy agents of far apart skill play the same 16 starts in the world and in the game,
    and the world ranks them as the game does. The start seed was fixed before any world played it, and the world
    was chosen on other start sets. The world draws fewer pushes than the game (38% on the sets it was chosen on);
    here the order of ``sticky`` and ``pusher`` rests on 7 pushes in 16 starts, and of the seven other start sets
    measured it does not hold on one: docs/agents.md has the figures."""
    out = tmp_path / "agents"
    code = main([
        "eval-agents", "toy-push", "--policies", ",".join(RANKED), "--env", "toy:push",
        "--starts", "16", "--steps", "60", "--seed", "5000", "--out", str(out), "--quiet",
    ])  # fmt: skip
    assert code == 0
    r = json.loads((out / "metrics.json").read_text())
    assert r["policies"] == RANKED and (out / "metrics.md").is_file() and (out / "returns.png").is_file()
    assert r["score"] == "events"  # a world without a rate model is scored by its reward model's points
    real, world = np.array(r["real_return"]), np.array(r["world_return"])
    assert real[0] < real[1] < real[2], r  # the game: noop < sticky < pusher
    assert world[0] == 0.0, r  # the world invents no push for the agent that never moves
    assert world[1] > 0.0 and world[2] > 0.0, r  # and draws pushes for the two that push
    assert world[0] < world[1] < world[2] and r["spearman"] == 1.0, r  # in the game's order
    assert np.all(world < real + 0.5), r  # it never scores an agent well above the game (it misses pushes instead)
    for key in ("pearson", "spearman", "mmrv", "return_error", "real_ci95", "world_ci95"):
        assert key in r, key
    assert len(r["per_start"][RANKED[0]]["real_returns"]) == 16
    assert "Spearman" in capsys.readouterr().out

    # without a game: the world alone, from its own held-out prompts (16 streams, as above: compiled once)
    alone = evaluate_agents(load_world(resolve_world("toy-push")), RANKED, starts=16, steps=8, progress=False)
    assert alone["env"] is None and "spearman" not in alone and len(alone["world_return"]) == 3
