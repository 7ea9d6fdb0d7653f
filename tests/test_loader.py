"""The Grain loader: shapes, content, determinism, exact resume, held-out split, sharding."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import record_toy
from worldplay import open_dataset
from worldplay.data.loader import WindowSource, make_loader, split_episodes
from worldplay.errors import DatasetError


def _loader(path, **kw):
    args = dict(window=8, batch_size=4, seed=0, shard_index=0, shard_count=1, num_threads=0, holdout=0.2)
    args.update(kw)
    return make_loader(path, **args)


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_batches_have_the_documented_shapes(toy_dataset):
    b = next(iter(_loader(toy_dataset, num_threads=2)))
    assert b["frames"].shape == (4, 8, 64, 64, 3) and b["frames"].dtype == np.uint8
    assert b["actions"].shape == (4, 8) and b["actions"].dtype == np.int32


def test_windows_are_real_consecutive_frames(toy_dataset):
    ds = open_dataset(toy_dataset)
    src = WindowSource(ds, 8, range(len(ds)))
    assert len(src) == sum(n - 7 for n in ds.episode_lengths)
    for i in [0, 1, 112, 113, 500, len(src) - 1]:
        ep, start = src.locate(i)
        full = ds[ep]
        item = src[i]
        np.testing.assert_array_equal(item["frames"], full.frames[start : start + 8])
        np.testing.assert_array_equal(item["actions"], full.actions[start : start + 8])
    with pytest.raises(IndexError):
        src.locate(len(src))


def test_seeded_shuffle_is_deterministic(toy_dataset):
    a = _take(iter(_loader(toy_dataset, seed=3)), 5)
    b = _take(iter(_loader(toy_dataset, seed=3)), 5)
    c = _take(iter(_loader(toy_dataset, seed=4)), 5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["frames"], y["frames"])
    assert any(not np.array_equal(x["frames"], z["frames"]) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("threads", [0, 2])
def test_exact_resume_from_saved_state(toy_dataset, threads):
    it = iter(_loader(toy_dataset, num_threads=threads))
    _take(it, 7)
    state = it.get_state()
    expected = _take(it, 5)
    it2 = iter(_loader(toy_dataset, num_threads=threads))
    it2.set_state(state)
    for x, y in zip(expected, _take(it2, 5), strict=True):
        np.testing.assert_array_equal(x["frames"], y["frames"])
        np.testing.assert_array_equal(x["actions"], y["actions"])


def test_epochs_are_reshuffled_and_cover_everything(toy_dataset):
    ds = open_dataset(toy_dataset)
    train, _ = split_episodes(ds, 0.2, 0)
    n = len(WindowSource(ds, 8, train))
    it = iter(_loader(toy_dataset, batch_size=1))
    first = [next(it)["frames"][0, 0].sum() for _ in range(n)]
    second = [next(it)["frames"][0, 0].sum() for _ in range(n)]
    assert sorted(first) == sorted(second)  # same windows each epoch
    assert first != second  # in another order


def test_heldout_split_is_disjoint_stable_and_never_trained_on(tmp_path):
    path = record_toy(tmp_path / "ds", episodes=20, steps=20)
    ds = open_dataset(path)
    train, held = split_episodes(ds, 0.25, seed=5)
    assert set(train).isdisjoint(held) and sorted(train + held) == list(range(20))
    assert 1 <= len(held) <= 12
    assert split_episodes(ds, 0.25, seed=5) == (train, held)
    assert split_episodes(ds, 0.25, seed=6) != (train, held)
    # Adding episodes never moves an existing episode between splits.
    record_toy(path, episodes=10, steps=20, seed=100)
    ds2 = open_dataset(path)
    train2, held2 = split_episodes(ds2, 0.25, seed=5)
    assert set(held) <= set(held2) and set(train) <= set(train2)
    # The train loader only ever yields windows of train episodes.
    held_frames = {ds2.read_frames(i, 0, 20).tobytes() for i in held2}
    it = iter(_loader(path, window=20, batch_size=1, holdout=0.25, seed=5))
    for _ in range(3 * len(train2)):
        assert next(it)["frames"][0].tobytes() not in held_frames


def test_heldout_always_has_an_episode(tmp_path):
    ds = open_dataset(record_toy(tmp_path / "ds", episodes=2, steps=10))
    train, held = split_episodes(ds, 0.01, 0)
    assert len(held) == 1 and len(train) == 1


def test_sharding_splits_each_epoch_between_processes(toy_dataset):
    ds = open_dataset(toy_dataset)
    train, _ = split_episodes(ds, 0.2, 0)
    n = len(WindowSource(ds, 8, train))
    per_shard = n // 2
    seen = []
    for shard in (0, 1):
        it = iter(_loader(toy_dataset, batch_size=1, shard_index=shard, shard_count=2))
        seen.append([(next(it)["frames"][0].tobytes()) for _ in range(per_shard)])
    assert set(seen[0]).isdisjoint(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 2 * per_shard


def test_too_short_episodes_are_refused_clearly(toy_dataset):
    with pytest.raises(DatasetError, match="no episode of at least 500 frames"):
        _loader(toy_dataset, window=500)
