"""The rate model (expected rewards, for scoring agents) learns the rate of the toy's touches and scores agents."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from worldplay.agents import evaluate_agents, reading
from worldplay.config import config_from_dict, config_to_dict
from worldplay.data.format import open_dataset
from worldplay.data.loader import split_episodes
from worldplay.errors import WorldplayError
from worldplay.evaluate import record_rollouts
from worldplay.train.rate import ConcatSource, train_rate
from worldplay.world import load_world

# What the toy's rate model learns at this budget (300 steps of batch 32, 13 s): the rate of touches, not yet
# where they fall. Its held-out loss falls far below the untrained model's (soft cross-entropy of uniform shares,
# ln 3 = 1.10; 0.16 measured) and its expected reward per step on held-out real episodes matches their touch rate
# (0.88 of it, measured; a model that learned nothing gives 0 here: equal shares of -1, 0 and +1). Which steps the
# touches fall on it does not learn at this budget (held-out correlation per window -0.01; 0.09 at 600 steps on the
# pushed-ball game, whose three toy agents it ranked in the game's order in one of two trainings), so this test
# checks the rate and the plumbing; how well a rate model ranks agents is measured on Boxing (docs/agents.md).
MAX_EVAL_LOSS = 0.5
RATE_BAND = (0.5, 2.0)  # expected over real touches per step, on held-out episodes


def test_the_hold_policy_holds_its_keys_far_longer_than_sticky():
    from worldplay.policies import make_policy

    def mean_hold(name: str) -> float:  # mean frames between key changes (a key drawn twice in a row counts once)
        pol = make_policy(name, [str(k) for k in range(18)])
        pol.reset(3)
        keys = np.array([pol(None) for _ in range(20_000)])
        return float(np.mean(np.diff(np.flatnonzero(np.diff(keys) != 0))))

    # holds of 1 to 120 frames average about 60 (sticky's 1 to 15, about 8)
    assert mean_hold("sticky") < 12 and 45 < mean_hold("hold") < 80


def test_concat_source_reads_each_source_in_turn():
    src = ConcatSource([[1, 2], [], [3, 4, 5]])
    assert len(src) == 5 and [src[i] for i in range(5)] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_rate_model_learns_the_toy_touches_and_scores_agents_in_the_world(toy_world_run, tmp_path, optimised):
    world_dir = tmp_path / "world"
    shutil.copytree(toy_world_run["world"], world_dir)
    values = config_to_dict(toy_world_run["config"])
    values["name"] = "toy-rate"
    values["data"]["dataset"] = str(toy_world_run["recorded"])  # the episodes with their logged keys and rewards
    values["rate"] = {"frames": 3, "lag": 1, "keys": 8, "horizon": 8, "width": 32, "sampling_steps": 2, "guidance": 2.0}
    values["train_rate"] = {
        "batch_size": 32, "steps": 300, "warmup": 20, "lr": 2e-3, "ema_decay": 0.99, "eval_every": 300,
        "eval_batches": 4, "checkpoint_every": 300, "runs_dir": str(tmp_path / "runs"),
    }  # fmt: skip
    cfg = config_from_dict(values)
    result = train_rate(cfg, world=world_dir, progress=False)
    log = tmp_path / "runs/toy-rate/rate/logs/metrics.jsonl"
    metrics = [json.loads(line) for line in log.read_text().splitlines()]
    assert [m["eval"]["eval_loss"] for m in metrics if "eval" in m][-1] < MAX_EVAL_LOSS, metrics[-1]

    world = load_world(result["world"])
    assert world.has_rate and world.has_reward  # the rate model joined the reward model, nothing was dropped
    assert json.loads((world_dir / "world.json").read_text())["rate"]["config"]["keys"] == 8
    # on the held-out real episodes: one expected reward per step, a mix of the class values (touches are +1, and
    # the model puts next to nothing on -1, which never happens), and on average the episodes' own rate of touches
    ds = open_dataset(toy_world_run["recorded"])
    _, held = split_episodes(ds, cfg.data.holdout, cfg.data.seed)
    expected, real = [], []
    for i in held:
        n = ds.episode_lengths[i]
        z = np.asarray(world.encode(ds.read_frames(i, 0, n)))[None]
        e = world.expected_rewards(z, ds.read_actions(i)[None])
        assert e.shape == (1, n) and np.all((e > -0.05) & (e <= 1.0)), e
        expected.append(e[0, :-1].sum())
        real.append(ds.read_outcomes(i)[0][: n - 1].sum())
    ratio = sum(expected) / sum(real)
    assert RATE_BAND[0] < ratio < RATE_BAND[1], (expected, real)

    # how eval-agents reads a world with a rate model: by its expected rewards, on rollouts sampled with the rate
    # model's own steps and guidance, unless told otherwise
    assert reading(result["world"]) == ("rate", 2, 2.0)
    assert reading(result["world"], None, 1) == ("rate", 1, 2.0)
    assert reading(result["world"], None, None, 1.5) == ("rate", 2, 1.5)
    assert reading(result["world"], "events") == ("events", None, None)
    assert reading(toy_world_run["world"]) == ("events", None, None)  # the same world before it had a rate model

    # scoring agents with it (the default score of a world with a rate model): returns are sums of expected
    # rewards, so a policy scores more than 0 and less than one touch per step; the event score of the same world
    # still works beside it
    rate = evaluate_agents(world, ["random", "sticky"], starts=4, steps=12, batch=4, progress=False)
    assert rate["score"] == "rate" and all(0.0 < r < 12.0 for r in rate["world_return"]), rate
    assert rate["guidance"] == world.config.guidance  # this world was loaded with its own sampler
    events = evaluate_agents(world, ["random"], starts=4, steps=12, batch=4, score="events", progress=False)
    assert events["score"] == "events"
    # the command plays the rollouts it scores with the rate model's own sampler, and says so
    from worldplay.cli import main

    assert main(["eval-agents", str(world_dir), "--policies", "random", "--starts", "2", "--steps", "6",
                 "--batch", "2", "--out", str(tmp_path / "ea"), "--quiet"]) == 0  # fmt: skip
    ea = json.loads((tmp_path / "ea" / "metrics.json").read_text())
    assert (ea["score"], ea["sampling_steps"], ea["guidance"]) == ("rate", 2, 2.0), ea
    assert "2 denoising steps per frame, guidance 2" in (tmp_path / "ea" / "metrics.md").read_text()

    # rollouts of a world with a rate model record each episode's expected return beside its return
    summary = record_rollouts(world, "random", tmp_path / "rollouts", episodes=2, steps=6, batch=2, progress=False)
    expected = [e["expected_return"] for e in summary["episode_list"]]
    assert len(expected) == 2 and all(0.0 < x < 6.0 for x in expected), summary["episode_list"]
    assert summary["runs"][-1]["mean_expected_return"] == pytest.approx(np.mean(expected))

    # the environments' reward="rate": each step's expected reward as it is played equals the offline reading of
    # the same rollout (its latents captured as they came)
    from gymnasium.utils.env_checker import check_env

    from worldplay.env import WorldModelEnv, WorldModelVectorEnv

    captured = []
    step_latent = world.step_latent_with_reward

    def capture(*args, **kwargs):
        out = step_latent(*args, **kwargs)
        captured.append(np.asarray(out[2]))
        return out

    world.step_latent_with_reward = capture  # type: ignore[method-assign]
    envs = WorldModelVectorEnv(world, 3, reward="rate")
    envs.reset(seed=0, options={"prompt_index": [0, 1, 2]})
    frames0, actions0 = world.held_out_prompt(np.array([0, 1, 2]))
    rng = np.random.default_rng(0)
    acts, got, ended = [], [], []
    for _ in range(12):
        a = rng.integers(len(world.action_names), size=3)
        _, r, terminated, _, _ = envs.step(a)
        acts.append(a)
        got.append(r)
        ended.append(terminated)
    P = frames0.shape[1]
    prompt_z = np.asarray(world.encode(frames0.reshape(-1, *frames0.shape[2:])))
    z = np.concatenate([prompt_z.reshape(3, P, *prompt_z.shape[1:]), np.stack(captured, 1)], 1)
    seq = np.concatenate([actions0, np.stack(acts, 1), np.zeros((3, 1), np.int64)], 1)
    offline = world.expected_rewards(z, seq)[:, P - 1 : P - 1 + 12]
    played = np.cumsum(np.stack(ended, 1), axis=1) - np.stack(ended, 1) == 0  # steps before a stream restarts
    assert played[:, :6].all()  # (a stream that ends restarts: later steps are another episode's)
    np.testing.assert_allclose(np.stack(got, 1)[played], offline[played], atol=1e-5)
    world.step_latent_with_reward = step_latent  # type: ignore[method-assign]
    check_env(WorldModelEnv(world, reward="rate", max_episode_steps=8), skip_render_check=True)
    with pytest.raises(WorldplayError, match="has no rate model"):
        WorldModelEnv(toy_world_run["world"], reward="rate")
