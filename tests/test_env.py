"""WorldModelEnv and WorldModelVectorEnv: the Gymnasium API around a (tiny, untrained) world."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
from flax import nnx
from gymnasium.utils.env_checker import check_env
from PIL import Image

from conftest import random_weights as _random_weights
from worldplay import WorldModelEnv, WorldModelVectorEnv
from worldplay.checkpoint import save_world
from worldplay.config import AutoencoderConfig, DynamicsConfig, config_to_dict
from worldplay.data.format import open_dataset
from worldplay.errors import WorldplayError
from worldplay.models.autoencoder import Autoencoder
from worldplay.models.dynamics import Dynamics
from worldplay.world import WorldModel, load_world

PROMPTS = 3  # held-out prompt windows shipped with the test world, 4 frames each


@pytest.fixture(scope="module")
def world_dir(toy_dataset, tmp_path_factory):
    """A tiny untrained world folder with PROMPTS prompt windows taken from the toy dataset."""
    ds = open_dataset(toy_dataset)
    ae_cfg = AutoencoderConfig(channels=(8, 8, 8), latent_channels=4)
    dyn_cfg = DynamicsConfig(width=32, depth=1, heads=2, window=4)
    ae = _random_weights(lambda: Autoencoder(ae_cfg, rngs=nnx.Rngs(0)), 0)
    dyn = _random_weights(lambda: Dynamics(dyn_cfg, ae_cfg.latent_shape, len(ds.action_names), rngs=nnx.Rngs(0)), 1)
    windows = [ds.read_window(e, 10 + 7 * e, 4) for e in range(PROMPTS)]
    frames = np.stack([f for f, _ in windows])  # [K, P, H, W, 3]
    actions = np.stack([a for _, a in windows]).astype(np.int32)  # [K, P], as training writes them
    assert all(not np.array_equal(frames[i, -1], frames[j, -1]) for i in range(PROMPTS) for j in range(i))
    meta = {
        "name": "tiny",
        "autoencoder": config_to_dict(ae_cfg),
        "dynamics": config_to_dict(dyn_cfg),
        "action_names": list(ds.action_names),
        "fps": ds.fps,
        "frame_shape": list(ds.frame_shape),
        "latent_mean": [0.0] * 4,
        "latent_std": [1.0] * 4,
    }
    return save_world(tmp_path_factory.mktemp("envworld") / "world", meta, ae, dyn, frames, actions)


@pytest.fixture(scope="module")
def world(world_dir) -> WorldModel:
    return load_world(world_dir)


def _rollout(env: WorldModelEnv, seed: int, actions: list[int], options: dict | None = None) -> np.ndarray:
    obs, _ = env.reset(seed=seed, options=options)
    frames = [obs]
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        assert reward == 0.0 and terminated is False and truncated is False
        frames.append(obs)
    return np.stack(frames)  # [1 + len(actions), H, W, 3]


def test_env_passes_gymnasiums_checker(world_dir):
    """Built from a world folder path; reset/step determinism, spaces, returned data and rendering all checked."""
    env = WorldModelEnv(str(world_dir), render_mode="rgb_array", max_episode_steps=50)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(5)
    assert env.get_action_meanings() == ["NOOP", "UP", "DOWN", "LEFT", "RIGHT"] == list(env.metadata["action_names"])
    assert env.metadata["render_fps"] == env.world.fps and env.metadata["render_modes"] == ["rgb_array"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=False)
    # the only warning allowed: alternative render modes are not checked for an env made without gym.make
    assert [str(w.message) for w in caught if "spec" not in str(w.message)] == []
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs)
    obs, *_ = env.step(1)
    np.testing.assert_array_equal(env.render(), obs)


def test_same_seed_same_frames_and_actions_matter(world):
    env = WorldModelEnv(world)
    actions = [0, 1, 2, 3, 4]
    a, b = _rollout(env, 3, actions), _rollout(env, 3, actions)
    np.testing.assert_array_equal(a, b)
    # the seed reaches the sampling noise, not only the choice of prompt
    same_prompt = {"prompt_index": 0}
    a0 = _rollout(env, 3, actions, same_prompt)
    np.testing.assert_array_equal(a0, _rollout(env, 3, actions, same_prompt))
    assert not np.array_equal(a0[1:], _rollout(env, 4, actions, same_prompt)[1:])
    c = _rollout(env, 3, [4, 3, 2, 1, 0])
    assert c.dtype == np.uint8 and all(env.observation_space.contains(f) for f in c)
    np.testing.assert_array_equal(a[0], c[0])
    assert not np.array_equal(a[1:], c[1:])

    # the prompt is drawn from the world's held-out windows with the env's generator, and says which
    seen = set()
    for seed in range(8):
        obs, info = env.reset(seed=seed)
        np.testing.assert_array_equal(obs, world.prompts[0][info["prompt_index"], -1])
        seen.add(info["prompt_index"])
    assert len(seen) > 1
    obs, info = env.reset(seed=0, options={"prompt_index": 2})
    assert info == {"prompt_index": 2}
    np.testing.assert_array_equal(obs, world.prompts[0][2, -1])


def test_guidance_is_live_and_defaults_to_the_worlds(world):
    env = WorldModelEnv(world)
    default = _rollout(env, 5, [1, 1, 4])
    env.guidance = world.config.guidance
    np.testing.assert_array_equal(_rollout(env, 5, [1, 1, 4]), default)
    env.guidance = 0.0
    assert not np.array_equal(_rollout(env, 5, [1, 1, 4]), default)


def test_prompts_given_and_refused(world, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "good.png")
    env = WorldModelEnv(world, prompt=tmp_path / "good.png")
    obs, info = env.reset(seed=0)
    assert info == {"prompt": "given"}
    np.testing.assert_array_equal(obs, image)
    other = np.stack([image, 255 - image])  # frames [P, H, W, 3]
    obs, info = env.reset(options={"prompt": other})
    assert info == {"prompt": "given"}
    np.testing.assert_array_equal(obs, other[-1])
    assert env.step(2)[0].shape == (64, 64, 3)

    Image.fromarray(image[:32, :48]).save(tmp_path / "small.png")  # an image file is resized, like play --prompt
    obs, _ = WorldModelEnv(world, prompt=str(tmp_path / "small.png")).reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(WorldplayError, match=r"broken\.png: cannot read the prompt image"):
        env.reset(options={"prompt": tmp_path / "broken.png"})
    with pytest.raises(WorldplayError, match="no such prompt image"):
        WorldModelEnv(world, prompt=tmp_path / "missing.png")
    with pytest.raises(WorldplayError, match=r"expected a uint8 image \[64, 64, 3\].*got float32"):
        WorldModelEnv(world, prompt=image.astype(np.float32))
    with pytest.raises(WorldplayError, match=r"got uint8 \[32, 32, 3\]"):
        env.reset(options={"prompt": image[:32, :32]})
    with pytest.raises(WorldplayError, match="this world has 3 prompts"):
        env.reset(options={"prompt_index": 3})

    bare = copy.copy(world)
    bare.prompts = None
    with pytest.raises(WorldplayError, match=r"this world has no prompt frames.*pass prompt="):
        WorldModelEnv(bare).reset(seed=0)
    assert WorldModelEnv(bare, prompt=image).reset(seed=0)[1] == {"prompt": "given"}


def test_bad_actions_are_refused(world):
    env = WorldModelEnv(world)
    with pytest.raises(WorldplayError, match=r"call reset\(\) before step\(\)"):
        env.step(0)
    env.reset(seed=0)
    for bad in (5, -1, 1.5, "UP"):
        with pytest.raises(WorldplayError, match=r"not in the action space Discrete\(5\).*4=RIGHT"):
            env.step(bad)
    assert env.step(np.int64(4))[4] == {"frame_index": 1}
    with pytest.raises(WorldplayError, match="max_episode_steps must be a positive integer"):
        WorldModelEnv(world, max_episode_steps=0)
    with pytest.raises(WorldplayError, match="render_mode 'human' is not supported"):
        WorldModelEnv(world, render_mode="human")
    with pytest.raises(WorldplayError, match=r"reward='points': use 'events'.*or 'rate'"):
        WorldModelVectorEnv(world, 2, reward="points")
    with pytest.raises(WorldplayError, match="has no rate model; add one with `worldplay train rate"):
        WorldModelEnv(world, reward="rate")


def test_truncation_at_max_episode_steps(world):
    env = WorldModelEnv(world, max_episode_steps=3)
    for _episode in range(2):
        env.reset(seed=1)
        results = [env.step(1) for _ in range(3)]
        assert [r[3] for r in results] == [False, False, True]
        assert [r[2] for r in results] == [False] * 3
        assert [r[4]["frame_index"] for r in results] == [1, 2, 3]
    env = WorldModelEnv(world)  # no limit: never truncates
    env.reset(seed=1)
    assert not any(env.step(0)[3] for _ in range(5))


def test_vector_env_spaces_and_shapes(world):
    envs = WorldModelVectorEnv(world, 3, max_episode_steps=10)
    assert envs.num_envs == 3
    assert envs.single_observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert envs.single_action_space == gym.spaces.Discrete(5)
    assert envs.observation_space.shape == (3, 64, 64, 3) and envs.observation_space.dtype == np.uint8
    assert envs.action_space == gym.spaces.MultiDiscrete([5, 5, 5])
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert envs.get_action_meanings() == ["NOOP", "UP", "DOWN", "LEFT", "RIGHT"]

    obs, infos = envs.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8 and obs in envs.observation_space
    assert infos["prompt_index"].shape == (3,) and infos["_prompt_index"].all()
    np.testing.assert_array_equal(obs, world.prompts[0][infos["prompt_index"], -1])
    obs, rewards, terminations, truncations, infos = envs.step(np.array([0, 1, 4]))
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8 and obs in envs.observation_space
    assert rewards.shape == (3,) and rewards.dtype == np.float64 and not rewards.any()
    assert terminations.shape == truncations.shape == (3,)
    assert terminations.dtype == truncations.dtype == np.bool_ and not terminations.any() and not truncations.any()
    np.testing.assert_array_equal(infos["frame_index"], [1, 1, 1])

    for bad in (np.array([0, 1, 5]), np.array([0, 1]), np.array([0.0, 1.0, 2.0])):
        with pytest.raises(WorldplayError, match=r"expected 3 integers in 0\.\.4"):
            envs.step(bad)
    with pytest.raises(WorldplayError, match="reset_mask: expected 3 booleans"):
        envs.reset(options={"reset_mask": np.array([1, 0, 1])})

    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    obs, infos = envs.reset(options={"prompt": image})  # one prompt for every stream
    np.testing.assert_array_equal(obs, np.stack([image] * 3))
    assert list(infos["prompt"]) == ["given"] * 3
    obs, infos = envs.reset(options={"prompt_index": [2, 0, 1]})
    np.testing.assert_array_equal(obs, world.prompts[0][[2, 0, 1], -1])


def test_vector_env_steps_all_streams_in_one_world_call(world, monkeypatch):
    envs = WorldModelVectorEnv(world, 3)
    calls = []
    step = world.step_with_reward

    def counted(state, action, guidance=None):
        calls.append(np.asarray(action).shape)
        return step(state, action, guidance)

    monkeypatch.setattr(world, "step_with_reward", counted)
    envs.reset(seed=0)
    for t in range(4):
        envs.step(np.array([t % 5, 1, 2]))
    assert calls == [(3,)] * 4


def test_vector_stream_zero_is_the_single_env_with_the_same_seed(world):
    """The streams share one key and draw their noise as one [B, ...] array, whose first row is the draw of a
    single stream from that key (threefry is partitionable), so stream 0 follows a single env seeded the same."""
    envs, env = WorldModelVectorEnv(world, 3), WorldModelEnv(world)
    obs_B, _ = envs.reset(seed=11, options={"prompt_index": [2, 0, 1]})
    obs, _ = env.reset(seed=11, options={"prompt_index": 2})
    frames_B, frames = [obs_B], [obs]
    for a in (1, 4, 4, 2):
        frames_B.append(envs.step(np.array([a, 0, 3]))[0])
        frames.append(env.step(a)[0])
    stream0 = np.stack(frames_B)[:, 0].astype(int)
    np.testing.assert_allclose(stream0, np.stack(frames), atol=2)  # equal up to batched float rounding
    assert np.abs(stream0[1:] - np.stack(frames_B)[1:, 1]).max() > 2  # other streams differ


def test_vector_env_autoresets_on_the_next_step(world):
    envs = WorldModelVectorEnv(world, 3, max_episode_steps=2)
    envs.reset(seed=2)
    acts = np.array([1, 2, 3])
    truncs = [envs.step(acts)[3] for _ in range(2)]
    np.testing.assert_array_equal(truncs, [[False] * 3, [True] * 3])
    obs, rewards, terminations, truncations, infos = envs.step(acts)  # the reset step: actions ignored
    np.testing.assert_array_equal(obs, world.prompts[0][infos["prompt_index"], -1])
    assert not rewards.any() and not terminations.any() and not truncations.any()
    np.testing.assert_array_equal(infos["frame_index"], [0, 0, 0])
    obs, _, _, truncations, infos = envs.step(acts)  # and a new episode runs
    np.testing.assert_array_equal(infos["frame_index"], [1, 1, 1])
    assert not truncations.any()
    assert envs.step(acts)[3].all()


def test_vector_env_restarts_one_stream_alone(world):
    """A partial reset restarts the masked streams from their new prompts and leaves the others' past as it was;
    their episodes then end at different steps and autoreset restarts only the ended ones."""
    envs = WorldModelVectorEnv(world, 3, max_episode_steps=3)
    envs.reset(seed=3, options={"prompt_index": [0, 1, 2]})
    acts = np.array([1, 2, 3])
    envs.step(acts)
    before = envs._state
    obs, infos = envs.reset(options={"reset_mask": np.array([False, True, False]), "prompt_index": [0, 2, 0]})
    after = envs._state
    np.testing.assert_array_equal(obs[1], world.prompts[0][2, -1])  # stream 1 starts over from prompt 2
    np.testing.assert_array_equal(infos["_prompt_index"], [False, True, False])
    for part in ("cache_k", "cache_v"):  # the other streams' cached past is untouched
        np.testing.assert_array_equal(np.asarray(getattr(after, part))[:, [0, 2]],
                                      np.asarray(getattr(before, part))[:, [0, 2]])  # fmt: skip
    np.testing.assert_array_equal(np.asarray(after.frame_index)[[0, 2]], np.asarray(before.frame_index)[[0, 2]])
    assert int(after.frame_index[1]) == world.prompts[0].shape[1]  # stream 1 holds only its new prompt

    frame_index = []
    truncs = []
    for _ in range(4):
        obs, _, _, truncations, infos = envs.step(acts)
        truncs.append(truncations.tolist())
        frame_index.append(infos["frame_index"].tolist())
    # streams 0 and 2 end at their 3rd step, stream 1 (restarted after one step) a step later
    assert truncs == [[False, False, False], [True, False, True], [False, True, False], [False, False, False]]
    assert frame_index == [[2, 1, 2], [3, 2, 3], [0, 3, 0], [1, 0, 1]]
