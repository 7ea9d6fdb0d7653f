"""The dynamics transformer, the sampler and the world: causality, cache, guidance, fixed shapes."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from worldplay import diffusion
from worldplay.config import AutoencoderConfig, DynamicsConfig
from worldplay.errors import WorldplayError
from worldplay.models.autoencoder import Autoencoder
from worldplay.models.dynamics import Dynamics
from worldplay.world import WorldModel, _past, fill, generate

LATENT = (8, 8, 4)


def _perturbed(module: nnx.Module, scale: float = 0.05) -> nnx.Module:
    """Give the zero-initialised layers non-zero weights, so every path carries signal."""
    params = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    nnx.update(module, jax.tree.unflatten(treedef, leaves))
    return module


def _dynamics(window: int = 5, **kw) -> Dynamics:
    cfg = DynamicsConfig(width=32, depth=2, heads=2, window=window, **kw)
    return _perturbed(Dynamics(cfg, LATENT, 5, rngs=nnx.Rngs(0)))


def _world(dyn: Dynamics) -> WorldModel:
    ae = Autoencoder(AutoencoderConfig(channels=(8, 8, 8), latent_channels=LATENT[2]), rngs=nnx.Rngs(0))
    return WorldModel(ae, dyn, latent_mean=[0.0] * 4, latent_std=[1.0] * 4, action_names=list("ABCDE"))


def _inputs(B: int = 2, T: int = 5):
    z = jax.random.normal(jax.random.key(2), (B, T, *LATENT))
    t = jax.random.uniform(jax.random.key(3), (B, T))
    a = jax.random.randint(jax.random.key(4), (B, T), 0, 6)
    return z, t, a


def test_block_causal():
    """Changing frame 3's input leaves frames 0-2's outputs unchanged, and does change frames 3-4."""
    dyn = _dynamics()
    z, t, a = _inputs()
    out = dyn(z, t, a)
    for changed in (dyn(z.at[:, 3].add(1.0), t, a), dyn(z, t.at[:, 3].set(0.9), a), dyn(z, t, a.at[:, 3].set(0))):
        np.testing.assert_array_equal(out[:, :3], changed[:, :3])
    assert float(jnp.abs(out[:, 3:] - dyn(z.at[:, 3].add(1.0), t, a)[:, 3:]).max()) > 1e-3


def test_cached_step_equals_full_window():
    """Frames fed one by one through the KV cache give what the whole window computes at once."""
    dyn = _dynamics(window=5)
    world = _world(dyn)
    z, _, a = _inputs()
    c = dyn.config.context_noise
    state = world.empty_state(2)
    key, noisy = state.key, []
    for p in range(4):  # fill draws the same context noise we reproduce here
        key, k_noise = jax.random.split(key)
        noisy.append(diffusion.add_noise(z[:, p], jax.random.normal(k_noise, z[:, p].shape), c))
        state = fill(dyn, state, z[:, p], a[:, p])
    t_new = jnp.array([0.7, 0.3])
    full = dyn(jnp.stack([*noisy, z[:, 4]], axis=1), jnp.concatenate([jnp.full((2, 4), c), t_new[:, None]], axis=1), a)[
        :, 4
    ]
    cached, _, _ = dyn.step(z[:, 4], t_new, a[:, 4], *_past(dyn, state))
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("level", [None, 0.0])
def test_context_frames_are_noised_to_the_sampling_level(level):
    """Appending a frame draws context noise (``context_noise``) unless the sampling level is 0: then the cache
    holds the clean frame, whatever the stream's random key."""
    dyn = _dynamics(window=4, sampling_context_noise=level)
    world = _world(dyn)
    z, _, a = _inputs(T=1)
    one, other = (fill(dyn, world.empty_state(2, seed), z[:, 0], a[:, 0]) for seed in (0, 1))
    same = np.array_equal(one.cache_k, other.cache_k)
    assert same == (level == 0.0)


def test_runs_past_the_window_without_recompiling():
    dyn = _dynamics(window=4)
    world = _world(dyn)
    prompt = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    state = world.start(prompt, [1])
    frame_fn = world._fns["frame"]
    state, _ = world.step(state, 0)
    compiled = frame_fn._cache_size()
    frames = []
    for k in range(3 * dyn.config.window):
        state, frame = world.step(state, k % 5, guidance=1.0 + 0.1 * k)  # guidance changes live too
        frames.append(frame)
    assert frame_fn._cache_size() == compiled == 1
    assert int(state.frame_index[0]) == 2 + 1 + 3 * dyn.config.window
    assert np.stack(frames).shape == (12, 64, 64, 3) and np.stack(frames).dtype == np.uint8
    assert all(bool(jnp.isfinite(x).all()) for x in (state.cache_k, state.cache_v))


def test_guidance_scales():
    """Scale 1 is exactly the conditional prediction, scale 0 exactly the unconditional one."""
    c, u = jnp.array([1.5, -2.0, 3.25]), jnp.array([0.1, 0.2, -0.3])
    np.testing.assert_array_equal(diffusion.guide(c, u, 1.0), c)
    np.testing.assert_array_equal(diffusion.guide(c, u, 0.0), u)
    np.testing.assert_allclose(diffusion.guide(c, u, 2.0), u + 2 * (c - u), rtol=1e-6)

    # and through the sampler: guidance 1 / 0 equal sampling with only the action / only the null action
    dyn = _dynamics(window=4)
    world = _world(dyn)
    state = world.start(np.zeros((2, 64, 64, 3), np.uint8))
    acts = jnp.array([2])

    def sample_without_cfg(action):
        _key, k0 = jax.random.split(state.key)
        x = jax.random.normal(k0, (1, *LATENT))
        grid = diffusion.time_grid(dyn.config.sampling_steps)
        for t, t_next in itertools.pairwise(grid):
            x0, _, _ = dyn.step(x, jnp.full((1,), t), action, *_past(dyn, state))
            x = diffusion.euler_step(x, x0, t, t_next)
        return x

    _, cond = generate(dyn, state, acts, jnp.float32(1.0))
    _, uncond = generate(dyn, state, acts, jnp.float32(0.0))
    np.testing.assert_allclose(cond, sample_without_cfg(acts), atol=1e-5)
    np.testing.assert_allclose(uncond, sample_without_cfg(jnp.array([dyn.null_action])), atol=1e-5)
    assert float(jnp.abs(cond - uncond).max()) > 1e-3  # the action matters to this (perturbed) model


def test_state_is_a_fork():
    """Stepping never changes a state given to it: the same state twice gives the same frame."""
    world = _world(_dynamics(window=4))
    state = world.start(np.zeros((3, 64, 64, 3), np.uint8))
    _, a = world.step(state, 1)
    _, b = world.step(state, 1)
    _, c = world.step(state, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batched_streams_and_bad_input():
    world = _world(_dynamics(window=4))
    prompts = np.random.default_rng(0).integers(0, 256, (3, 2, 64, 64, 3), dtype=np.uint8)
    state = world.start(prompts, np.array([[0], [1], [2]]))
    assert state.batched and state.batch_size == 3
    state, frames = world.step(state, np.array([0, 1, 4]))
    assert frames.shape == (3, 64, 64, 3)
    with pytest.raises(WorldplayError, match="out of range; this world has 5 actions: A, B, C, D, E"):
        world.step(state, np.array([0, 1, 5]))
    with pytest.raises(WorldplayError, match="expected 3 integer action"):
        world.step(state, np.array([0, 1]))
    with pytest.raises(WorldplayError, match="expected uint8 frames"):
        world.start(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(WorldplayError, match="prompt actions: expected shape"):
        world.start(prompts[0], [1, 2, 3])


def test_motion_weights_favour_what_moved_and_keep_each_frames_scale():
    z = np.zeros((1, 3, 4, 4, 2), np.float32)
    z[0, 1, 1, 2] = 1.0  # one position changes from frame 0 to frame 1, and back from frame 1 to 2
    w = np.asarray(diffusion.motion_weights(jnp.asarray(z), 3.0))
    np.testing.assert_allclose(w.mean(axis=(2, 3)), 1.0, rtol=1e-5)  # a frame's loss keeps its scale
    np.testing.assert_allclose(w[0, 0], 1.0)  # the first frame has nothing before it
    assert w[0, 1, 1, 2] > 5 * w[0, 1, 0, 0]  # the moved position outweighs the still ones
    np.testing.assert_allclose(np.asarray(diffusion.motion_weights(jnp.asarray(z), 0.0)), 1.0)


def test_sprite_weights_keep_a_still_sprite_heavy_where_motion_weights_do_not():
    background = np.zeros((4, 4, 2), np.float32)
    z = np.zeros((1, 3, 4, 4, 2), np.float32)
    z[0, :, 3, 0] = 2.0  # a sprite that stands still in all three frames
    z[0, 1, 1, 2] = 1.0  # and one that appears in frame 1 only
    still = np.asarray(diffusion.motion_weights(jnp.asarray(z), 3.0))
    both = np.asarray(diffusion.motion_weights(jnp.asarray(z), 3.0, jnp.asarray(background), 2.0))
    np.testing.assert_allclose(both.mean(axis=(2, 3)), 1.0, rtol=1e-5)
    assert still[0, 2, 3, 0] == pytest.approx(still[0, 2, 0, 0])  # motion alone: the still sprite is background
    assert both[0, 2, 3, 0] > 5 * both[0, 2, 0, 0]  # with the sprite term it outweighs the empty screen
    assert both[0, 0, 3, 0] > 5 * both[0, 0, 0, 0]  # in the first frame too, which has nothing before it
    assert both[0, 1, 1, 2] > both[0, 1, 0, 0]  # what moved still gains
    sprite_only = np.asarray(diffusion.motion_weights(jnp.asarray(z), 0.0, jnp.asarray(background), 2.0))
    assert sprite_only[0, 1, 3, 0] > 5 * sprite_only[0, 1, 0, 0]
    np.testing.assert_allclose(np.asarray(diffusion.motion_weights(jnp.asarray(z), 0.0, None, 2.0)), 1.0)


def test_latent_background_is_the_empty_screen_behind_moving_sprites(tmp_path):
    from worldplay.data.format import DatasetWriter, open_dataset
    from worldplay.train.dynamics import latent_background

    rng = np.random.default_rng(0)
    writer = DatasetWriter.create(tmp_path / "ds", frame_shape=(8, 8, 3), action_names=["NOOP", "LEFT"], fps=15.0)
    for _ in range(3):
        writer.write_episode(np.zeros((10, 8, 8, 3), np.uint8), np.zeros(10, np.int64))
    ds = open_dataset(tmp_path / "ds")
    latents = np.full((30, 2, 2, 3), 0.5, np.float32)  # the empty screen's latent, everywhere
    for row in range(30):  # a sprite on one position per frame, moving on
        latents[row, row % 2, (row // 2) % 2] = rng.normal(5.0, 1.0, 3)
    np.testing.assert_allclose(latent_background(latents, ds, [0, 1, 2]), 0.5)
    latents[20:] = -1.0  # rows of the third episode only
    np.testing.assert_allclose(latent_background(latents, ds, [2]), -1.0)


@pytest.mark.parametrize("power", [1.0, 3.0])
def test_noise_levels_follow_the_configured_density(power):
    t = np.asarray(diffusion.sample_levels(jax.random.key(0), (200_000,), 0.1, 0.0, power))
    # density (k+1) t^k: P(t > 0.9) = 1 - 0.9^(k+1)
    assert abs(np.mean(t > 0.9) - (1 - 0.9 ** (power + 1))) < 0.005


def test_own_context_puts_the_models_one_step_prediction_in_place_of_picked_frames_without_gradient():
    dyn = _dynamics(window=6)
    z = jax.random.normal(jax.random.key(0), (8, 6, *LATENT))
    actions = jnp.asarray(np.random.default_rng(0).integers(0, 5, (8, 6)), jnp.int32)

    @functools.partial(jax.jit, static_argnums=1)
    def own(z_, prob):
        return diffusion.own_context(lambda z_t, t: dyn(z_t, t, actions), z_, jax.random.key(1), prob, 0.0)

    np.testing.assert_array_equal(own(z, 0.0), z)
    every = own(z, 1.0)  # every frame but the first is predicted from the first alone and pure noise
    np.testing.assert_array_equal(every[:, 0], z[:, 0])
    assert float(jnp.max(jnp.abs(every[:, 1:] - z[:, 1:]))) > 0.1
    np.testing.assert_allclose(own(z.at[:, 1:].multiply(-3.0), 1.0)[:, 1:], every[:, 1:], atol=1e-5)
    assert float(jnp.max(jnp.abs(own(z.at[:, 0].add(1.0), 1.0)[:, 1:] - every[:, 1:]))) > 1e-3
    # no gradient flows through a prediction: only the kept recorded frames pass it on
    grad = jax.grad(lambda z_: jnp.sum(own(z_, 1.0)))(z)
    np.testing.assert_array_equal(grad[:, 0], 1.0)
    np.testing.assert_array_equal(grad[:, 1:], 0.0)
    # a share ``prob`` of the later frames is picked (the picking does not depend on the model)
    many = jnp.zeros((2000, 6, 1, 1, 1))
    changed = np.asarray(diffusion.own_context(lambda z_t, t: z_t + 1, many, jax.random.key(2), 0.3, 0.0))
    changed = changed[:, :, 0, 0, 0] != 0  # [B, T]
    assert not changed[:, 0].any() and abs(changed[:, 1:].mean() - 0.3) < 0.01


def test_the_training_loss_makes_its_own_context_at_the_worlds_context_level(monkeypatch):
    from worldplay.config import Config
    from worldplay.train.dynamics import DynamicsObjective

    calls, own_context = [], diffusion.own_context

    def spy(denoise, z, key, prob, context_level):
        calls.append((prob, context_level))
        return own_context(denoise, z, key, prob, context_level)

    monkeypatch.setattr(diffusion, "own_context", spy)
    dyn = DynamicsConfig(width=16, depth=1, heads=2, window=3, own_context_prob=0.4, sampling_context_noise=0.05)
    cfg = Config(autoencoder=AutoencoderConfig(channels=(8, 8, 8), latent_channels=4), dynamics=dyn)
    objective = DynamicsObjective(cfg, num_actions=5)
    batch = {k: jnp.asarray(v) for k, v in objective.example_batch(2).items()}
    loss, _ = nnx.jit(objective.loss)(objective.build(nnx.Rngs(0)), batch, jax.random.key(0))
    assert np.isfinite(float(loss)) and calls == [(0.4, 0.05)]
