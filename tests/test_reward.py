"""The reward and episode-end model: in a world folder, inside the frame function, in the environments.

A tiny world with random weights (fast); its reward model's output layer is set by hand so that its
predictions are known: what the world, the environments and the rollouts do with them is what is tested.
What a trained reward model learns is tested on the trained toy world (tests/test_reward_learning.py).
"""

from __future__ import annotations

import json
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gymnasium.utils.env_checker import check_env

from conftest import random_weights as _random_weights
from worldplay import WorldModelEnv, WorldModelVectorEnv
from worldplay.checkpoint import CheckpointError, attach_part, autoencoder_identity, read_world_meta, save_world
from worldplay.config import AutoencoderConfig, DynamicsConfig, RewardConfig, config_to_dict
from worldplay.data.format import open_dataset
from worldplay.errors import WorldplayError
from worldplay.evaluate import _reward_scores, matched_events, record_rollouts, reward_evaluation
from worldplay.models.autoencoder import Autoencoder
from worldplay.models.dynamics import Dynamics
from worldplay.models.reward import NEG, NONE, POS, RewardModel, refractory_steps, report_series, reward_class
from worldplay.train.reward import class_weights
from worldplay.world import load_world

AE = AutoencoderConfig(channels=(8, 8, 8), latent_channels=4)
DYN = DynamicsConfig(width=32, depth=1, heads=2, window=4)
REW = RewardConfig(frames=3, width=4)


def _reward_model(bias: tuple[float, float, float, float], num_actions: int = 5) -> RewardModel:
    """A reward model whose output is ``bias`` whatever it reads (the output layer's weights are zero)."""
    model = _random_weights(lambda: RewardModel(REW, AE.latent_shape, num_actions, rngs=nnx.Rngs(0)), 2)
    model.out.kernel[...] = jnp.zeros_like(model.out.kernel[...])
    model.out.bias[...] = jnp.asarray(bias, jnp.float32)
    return model


@pytest.fixture(scope="module")
def plain_world(toy_dataset, tmp_path_factory):
    """A tiny untrained world folder without a reward model, with 3 held-out prompt windows of 4 frames."""
    ds = open_dataset(toy_dataset)
    ae = _random_weights(lambda: Autoencoder(AE, rngs=nnx.Rngs(0)), 0)
    dyn = _random_weights(lambda: Dynamics(DYN, AE.latent_shape, len(ds.action_names), rngs=nnx.Rngs(0)), 1)
    windows = [ds.read_window(e, 10, 4) for e in range(3)]
    meta = {
        "name": "tiny", "autoencoder": config_to_dict(AE), "dynamics": config_to_dict(DYN),
        "action_names": list(ds.action_names), "fps": ds.fps, "frame_shape": list(ds.frame_shape),
        "latent_mean": [0.0] * 4, "latent_std": [1.0] * 4,
    }  # fmt: skip
    frames = np.stack([f for f, _ in windows])
    actions = np.stack([a for _, a in windows]).astype(np.int32)
    return save_world(tmp_path_factory.mktemp("rw") / "world", meta, ae, dyn, frames, actions), (meta, ae, dyn)


def _attach(plain_world, world, model: RewardModel, values=(-1.0, 0.0, 2.0), refractory=None):
    """A copy of the plain world at ``world`` with ``model`` as its reward model."""
    import shutil

    shutil.copytree(plain_world[0], world)
    ae_id = autoencoder_identity(read_world_meta(world))
    meta = {"config": config_to_dict(model.config), "class_values": list(values), "autoencoder": {"id": ae_id}}
    if refractory is not None:
        meta["refractory"] = list(refractory)
    attach_part(world, "reward", model, meta)
    return world


def _with_reward(plain_world, tmp_path, bias, values=(-1.0, 0.0, 2.0)):
    return _attach(plain_world, tmp_path / "world", _reward_model(bias), values)


def _with_action_reward(plain_world, tmp_path, fire: int, lag: int = 0, refractory=(0, 0)):
    """A world whose reward model pays +2 for the step that takes action ``fire`` (whatever the frames), seen
    ``lag`` frames later."""
    _, (meta, _, _) = plain_world
    cfg = RewardConfig(frames=3, width=4, lag=lag)
    n = len(meta["action_names"])
    model = _random_weights(lambda: RewardModel(cfg, AE.latent_shape, n, rngs=nnx.Rngs(0)), 2)
    hidden = model.hidden.kernel.shape[0]
    model.proj.kernel[...] = jnp.zeros_like(model.proj.kernel[...])  # the frames count for nothing
    model.proj.bias[...] = jnp.zeros_like(model.proj.bias[...])
    model.action_embed.embedding[...] = jnp.zeros((n, hidden)).at[fire, 0].set(10.0)
    model.hidden.kernel[...] = jnp.eye(hidden)
    model.hidden.bias[...] = jnp.zeros(hidden)
    model.out.kernel[...] = jnp.zeros_like(model.out.kernel[...]).at[0, POS].set(10.0)
    model.out.bias[...] = jnp.asarray([0.0, 1.0, 0.0, -5.0])  # else no reward, and never an end
    world = tmp_path / f"world-{fire}-{lag}-{refractory[0]}{refractory[1]}"
    return _attach(plain_world, world, model, refractory=refractory)


def test_reward_classes_weights_and_event_scores():
    assert reward_class(np.array([-2.0, -1, 0, 1, 2])).tolist() == [NEG, NEG, NONE, POS, POS]
    w = class_weights(np.array([10, 980, 10]), balance=1.0)
    assert w[0] == pytest.approx(w[2]) and w[0] == pytest.approx(98 * w[1])  # inverse frequency
    assert np.dot(w, [0.01, 0.98, 0.01]) == pytest.approx(1.0)  # a mean weight of 1 per example
    assert class_weights(np.array([10, 980, 10]), balance=0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])
    exact = matched_events(np.array([1, 0, 1, 0]), np.array([1, 0, 0, 1]), tolerance=0)
    assert exact == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "predicted": 2, "real": 2})
    # within one frame counts; two frames away does not
    m = matched_events(np.array([0, 1, 0, 0, 0, 0, 1]), np.array([1, 0, 0, 1, 0, 0, 0]), tolerance=1)
    assert (m["precision"], m["recall"]) == (0.5, 0.5)
    assert matched_events(np.zeros(5), np.zeros(5))["f1"] == 1.0


def test_a_world_without_a_reward_model_plays_with_reward_0_and_says_so(plain_world):
    world = load_world(plain_world[0])
    assert not world.has_reward
    state = world.start(*world.held_out_prompt(0))
    state, frame, reward, end = world.step_with_reward(state, 1)
    assert frame.shape == (64, 64, 3) and reward == 0.0 and end is False
    with pytest.warns(UserWarning, match="no reward model"):
        env = WorldModelEnv(world, max_episode_steps=3)
    env.reset(seed=0)
    assert env.step(1)[1:4] == (0.0, False, False)


def test_scoring_by_rate_needs_a_rate_model_and_says_how_to_add_one(plain_world):
    from worldplay.agents import evaluate_agents

    world = load_world(plain_world[0])
    assert not world.has_rate
    with pytest.raises(WorldplayError, match=r"no rate model.*worldplay train rate"):
        evaluate_agents(world, ["random"], starts=1, steps=2, score="rate", progress=False)
    with pytest.raises(WorldplayError, match=r"no rate model.*worldplay train rate"):
        world.expected_rewards(np.zeros((1, 2, *world.latent_shape)), np.zeros((1, 2), np.int64))
    with pytest.raises(WorldplayError, match="--score must be events or rate"):
        evaluate_agents(world, ["random"], starts=1, steps=2, score="points", progress=False)


def test_eval_agents_refuses_a_wrong_policy_before_any_plays(plain_world, tmp_path, monkeypatch):
    """A wrong name last in --policies fails at once, not after the policies before it have played."""
    import worldplay.agents as agents

    world = load_world(_with_reward(plain_world, tmp_path, bias=(0.0, 0.0, 5.0, -5.0)))
    played = []
    monkeypatch.setattr(agents, "play_world", lambda *a, **k: played.append(a[1]) or np.zeros(1))
    with pytest.raises(WorldplayError, match="'nosuch': unknown policy"):
        agents.evaluate_agents(world, ["random", "nosuch"], starts=1, steps=2, score="events", progress=False)
    with pytest.raises(WorldplayError, match="cannot import module 'no_such_module_xyz'"):
        agents.evaluate_agents(world, ["random", "no_such_module_xyz:act"], starts=1, steps=2, progress=False)
    assert played == []


def test_reward_model_is_stored_in_the_world_and_runs_in_the_frame_function(plain_world, tmp_path):
    world_dir = _with_reward(plain_world, tmp_path, bias=(0.0, 0.0, 5.0, -5.0))  # always positive, never ends
    meta = json.loads((world_dir / "world.json").read_text())
    assert meta["reward"]["class_values"] == [-1.0, 0.0, 2.0] and "reward/_METADATA" in meta["files"]
    world = load_world(world_dir)
    assert world.has_reward
    frames, acts = world.held_out_prompt(np.array([0, 1]))
    state = world.start(frames, acts)
    assert state.recent.shape == (2, REW.frames, *AE.latent_shape)
    state, out, reward, end = world.step_with_reward(state, np.array([1, 2]))
    assert out.shape == (2, 64, 64, 3) and reward.tolist() == [2.0, 2.0] and end.tolist() == [False, False]
    # the plain step keeps its signature, and gives the same frame for the same state
    _, frame = world.step(world.start(frames, acts), np.array([1, 2]))
    np.testing.assert_array_equal(frame, out)
    # the newest latents are the last of `recent`: the generated frame's
    z = np.asarray(world.encode(frames[:, -1]))
    np.testing.assert_allclose(np.asarray(world.start(frames, acts).recent[:, -1]), z, atol=1e-5)


def test_re_exporting_a_world_keeps_its_reward_model_unless_the_autoencoder_changed(plain_world, tmp_path):
    world_dir = _with_reward(plain_world, tmp_path, bias=(0.0, 0.0, 5.0, -5.0))
    _, (meta, ae, dyn) = plain_world
    frames, actions = np.load(world_dir / "prompts.npz").values()
    save_world(world_dir, meta, ae, dyn, frames, actions)  # what the dynamics stage does at every checkpoint
    assert load_world(world_dir).has_reward
    other = {**meta, "latent_mean": [0.5] * 4}  # another autoencoder: its reward model would read the wrong latents
    save_world(world_dir, other, ae, dyn, frames, actions)
    assert not load_world(world_dir).has_reward
    model = _reward_model((0.0, 0.0, 0.0, 0.0))
    with pytest.raises(CheckpointError, match="another autoencoder"):
        attach_part(world_dir, "reward", model, {"config": config_to_dict(REW), "autoencoder": {"id": "x"}})


def test_envs_give_rewards_and_ends_and_the_vector_env_restarts_each_stream(plain_world, tmp_path):
    world_dir = _with_reward(plain_world, tmp_path, bias=(5.0, 0.0, 0.0, 5.0))  # negative reward, ends at once
    world = load_world(world_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a world with a reward model does not warn
        env = WorldModelEnv(world, render_mode="rgb_array", max_episode_steps=10)
    check_env(env, skip_render_check=False)
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(1)
    assert (reward, terminated, truncated) == (-1.0, True, False)

    envs = WorldModelVectorEnv(world, 3, max_episode_steps=10)
    envs.reset(seed=0)
    _, rewards, terms, truncs, _ = envs.step(np.array([1, 2, 3]))
    assert rewards.tolist() == [-1.0] * 3 and terms.all() and not truncs.any()
    # NEXT_STEP autoreset: every stream restarts on its own at the next step, reward 0, not ended
    _, rewards, terms, _, infos = envs.step(np.array([0, 0, 0]))
    assert rewards.tolist() == [0.0] * 3 and not terms.any() and infos["_prompt_index"].all()


def test_one_step_predictions_read_the_real_past_and_the_action_before(plain_world, tmp_path, toy_dataset):
    """Frame t of ``one_step_latents`` is the world's sample from the real frames before t and the action at t - 1:
    the real frame t itself does not change it (it only goes into the cache afterwards), that action does."""
    world = load_world(_with_reward(plain_world, tmp_path, bias=(0.0, 5.0, 0.0, -5.0)))
    ds = open_dataset(toy_dataset)
    frames, acts = ds.read_frames(0, 0, 6), ds.read_actions(0)[:6]
    z = np.asarray(world.encode(frames))[None].repeat(2, 0)  # two streams: they sample their own noise
    a = np.stack([acts, acts])
    pred = world.one_step_latents(z, a, seed=3)
    assert pred.shape == z.shape
    np.testing.assert_array_equal(pred[:, 0], z[:, 0])  # frame 0 is the real one
    np.testing.assert_array_equal(pred, world.one_step_latents(z, a, seed=3))  # the seed fixes the samples

    def changed(z_change=0.0, other_action=False):  # stream 0 again, with the real frame 2 or the action at 3 changed
        z1, a1 = z[:1].copy(), a[:1].copy()
        z1[0, 2] += z_change
        a1[0, 3] = (a1[0, 3] + int(other_action)) % len(world.action_names)
        return world.one_step_latents(z1, a1, seed=3)[0]

    p0 = world.one_step_latents(z[:1], a[:1], seed=3)[0]
    p1 = changed(z_change=1.0)
    np.testing.assert_allclose(p0[:3], p1[:3], atol=1e-5)  # up to frame 2 itself: the same past
    assert np.abs(p0[3] - p1[3]).max() > 1e-3  # frame 3 is sampled after the changed real frame 2
    p2 = changed(other_action=True)
    np.testing.assert_allclose(p0[:4], p2[:4], atol=1e-5)
    assert np.abs(p0[4] - p2[4]).max() > 1e-3  # the action at frame 3 made frame 4
    with pytest.raises(WorldplayError, match="actions: expected shape"):
        world.one_step_latents(z, a[:, :3])
    # the reward metrics on those predictions (this model says "no reward" whatever it reads)
    r = reward_evaluation(world, ds, [0, 1], world_frames=True)
    assert r["world_frames"]["positive"]["predicted"] == 0 and r["transitions"] == sum(ds.episode_lengths[:2]) - 2


def test_rollouts_record_returns_and_predicted_rewards(plain_world, tmp_path):
    world_dir = _with_reward(plain_world, tmp_path, bias=(0.0, 0.0, 5.0, -5.0))  # +2 every step, never ends
    world = load_world(world_dir)
    summary = record_rollouts(world, "random", tmp_path / "out", episodes=2, steps=5, batch=2, progress=False)
    assert [e["return"] for e in summary["episode_list"]] == [10.0, 10.0] and summary["mean_return"] == 10.0
    ds = open_dataset(tmp_path / "out" / "dataset")
    ep = ds[0]
    assert ep.rewards.tolist() == [0.0] * 3 + [2.0] * 5 + [0.0]  # prompt (unknown), 5 generated, the last action
    assert not ep.terminals.any()

    ended = _with_reward(plain_world, tmp_path / "b", bias=(0.0, 5.0, 0.0, 5.0))  # no reward, ends at once
    summary = record_rollouts(load_world(ended), "random", tmp_path / "out2", episodes=1, steps=5, progress=False)
    rec = summary["episode_list"][0]
    assert rec["generated_frames"] == 1 and rec["ended"] and rec["return"] == 0.0
    ep = open_dataset(tmp_path / "out2" / "dataset")[0]
    assert len(ep.actions) == 4 + 1 and ep.terminals.tolist() == [False] * 4 + [True]


def test_a_lagged_reward_model_reports_each_reward_lag_steps_late_and_an_event_once(plain_world, tmp_path):
    fire = 2
    frames, acts = load_world(plain_world[0]).held_out_prompt(np.array([0, 1]))
    acts[:, -1] = fire  # the prompt's last step would pay: it is not the stream's, so it is never reported

    def play(world_dir, actions, restart_at=None):
        world = load_world(world_dir)
        state = world.start(frames, acts)
        out = []
        for t, a in enumerate(actions):
            if t == restart_at:  # stream 1 starts again, from the same prompt
                state = world.restart(state, np.array([False, True]), frames, acts)
            state, _, r, _ = world.step_with_reward(state, np.array([a, a]))
            out.append(r.tolist())
        return np.array(out).T  # [stream, step]

    actions = [fire, 0, 0, fire, fire, 0]
    now = play(_with_action_reward(plain_world, tmp_path, fire, lag=0), actions)
    assert now.tolist() == [[2, 0, 0, 2, 2, 0]] * 2
    late = play(_with_action_reward(plain_world, tmp_path, fire, lag=1), actions, restart_at=4)
    assert late[0].tolist() == [0, 2, 0, 0, 2, 2]  # each one step late; the first is the prompt's, not reported
    # restarted at step 4: step 3's reward goes with its past, step 4 is its new first step (the prompt's)
    assert late[1].tolist() == [0, 2, 0, 0, 0, 2]
    # an event of a sign is not reported again within the refractory steps of the last prediction of that sign
    once = play(_with_action_reward(plain_world, tmp_path, fire, refractory=(0, 1)), actions)
    assert once[0].tolist() == [2, 0, 0, 2, 0, 0]
    assert report_series(np.array([2, 2, 2, 0, 0, 2, -1, -1, 0, 2]), (1, 2)).tolist() == [2, 0, 0, 0, 0, 2, -1, 0, 0, 2]
    assert refractory_steps([np.array([0, 1, 0, 0, 1, -1, 0, -1]), np.array([1, 0, 0, 0, 0, 0, 1.0])], 3) == (1, 2)

    # worldplay eval scores the rewards as the world reports them: one step late, within its 1-frame tolerance
    world = load_world(tmp_path / "world-2-1-00")  # the lagged world above
    n = 12
    z = np.random.default_rng(0).normal(size=(n, *AE.latent_shape)).astype(np.float32)
    a = np.zeros(n, np.int64)
    a[[2, 6, 9]] = fire
    rewards = np.where(a == fire, 1.0, 0.0).astype(np.float32)  # the step that fires pays
    outcome = (rewards, np.zeros(n, bool))
    for tolerance, f1 in ((1, 1.0), (0, 0.0)):
        scores = _reward_scores(world, [z], [a], [outcome], window=300, tolerance=tolerance)
        assert scores["positive"]["f1"] == f1 and scores["positive"]["predicted"] == 3
    # and rollouts write each reward at the step it belongs to (reported one step later)
    summary = record_rollouts(world, "random", tmp_path / "out", episodes=1, steps=5, progress=False)
    ep = open_dataset(tmp_path / "out" / "dataset")[0]
    generated = ep.actions[3:-1]  # 5 actions after the 3 of the prompt, before the last frame's
    assert ep.rewards[3:].tolist() == [2.0 * (x == fire) for x in generated[:4]] + [0.0, 0.0]
    assert summary["episode_list"][0]["return"] == ep.rewards.sum()
    # eval-agents counts the rewards of all of an episode's steps: the world plays on to report the last one
    from worldplay.agents import play_world

    noop = world.action_names.index("NOOP")
    start = frames[:1], acts[:1]
    for lag in (0, 1):
        pays = load_world(_with_action_reward(plain_world, tmp_path, noop, lag=lag))  # every NOOP pays 2
        r = play_world(pays, "worldplay.policies.toy:noop", *start, 5, seeds=[0], progress=False)
        assert r.tolist() == [10.0]


def test_ranking_metrics():
    from worldplay.agents import mean_ci95, mmrv, pearson, spearman

    assert spearman([1, 2, 3], [10, 20, 40]) == pytest.approx(1.0) and pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1)
    assert spearman([3, 2, 1], [10, 20, 40]) == pytest.approx(-1.0)
    assert mmrv([1, 2, 3], [0, 1, 2]) == 0.0
    # the world swaps the first two policies: each of them is off by half the real range, the third is fine
    assert mmrv([2, 1, 3], [0, 1, 2]) == pytest.approx(1 / 3)
    assert mmrv([1, 1, 3], [0, 1, 2]) == pytest.approx(1 / 3)  # a tie hides a real difference
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(1.96 / np.sqrt(3))
