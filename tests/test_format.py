"""The dataset format: round trip, windows, appends, refusals, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worldplay import DatasetWriter, open_dataset
from worldplay.data.format import temporary_files
from worldplay.errors import DatasetError

NAMES = ("NOOP", "UP", "DOWN")


def _episode(rng, T, shape=(16, 12, 3)):
    frames = rng.integers(0, 256, (T, *shape), dtype=np.uint8)
    actions = rng.integers(0, len(NAMES), T).astype(np.int32)
    rewards = rng.normal(size=T).astype(np.float32)
    terminals = np.zeros(T, bool)
    terminals[-1] = True
    return frames, actions, rewards, terminals


def test_round_trip_and_windows(tmp_path):
    rng = np.random.default_rng(0)
    w = DatasetWriter.create(tmp_path / "ds", frame_shape=(16, 12, 3), action_names=NAMES, fps=15, chunk_frames=4)
    eps = [_episode(rng, T) for T in (1, 4, 5, 23)]
    for i, (f, a, r, t) in enumerate(eps):
        w.write_episode(f, a, rewards=r, terminals=t, meta={"seed": i, "game": "test"})
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 4 and ds.action_names == NAMES and ds.frame_shape == (16, 12, 3)
    assert ds.num_frames == 33
    for i, (f, a, r, t) in enumerate(eps):
        ep = ds[i]
        np.testing.assert_array_equal(ep.frames, f)
        np.testing.assert_array_equal(ep.actions, a)
        np.testing.assert_array_equal(ep.rewards, r)
        np.testing.assert_array_equal(ep.terminals, t)
        assert ep.actions.dtype == np.int32 and ep.frames.dtype == np.uint8
        assert ep.meta["seed"] == i and ep.meta["game"] == "test"
    # every window of the long episode, across chunk boundaries, equals the slice
    f, a, _, _ = eps[3]
    for start in range(23):
        for length in (1, 3, 4, 5, 9, 23 - start):
            if start + length <= 23:
                frames, actions = ds.read_window(3, start, length)
                np.testing.assert_array_equal(frames, f[start : start + length])
                np.testing.assert_array_equal(actions, a[start : start + length])
    with pytest.raises(IndexError):
        ds.read_window(3, 20, 4)


def test_optional_arrays_absent(tmp_path):
    w = DatasetWriter.create(tmp_path / "ds", frame_shape=(8, 8, 3), action_names=NAMES, fps=15)
    w.write_episode(np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 1, 2]))
    ep = open_dataset(tmp_path / "ds")[0]
    assert ep.rewards is None and ep.terminals is None


def test_append_and_refusals(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "ds"
    DatasetWriter.create(path, frame_shape=(16, 12, 3), action_names=NAMES, fps=15).write_episode(*_episode(rng, 5)[:2])
    # reopening with the same shape and actions appends
    DatasetWriter.create(path, frame_shape=(16, 12, 3), action_names=NAMES, fps=15).write_episode(*_episode(rng, 6)[:2])
    assert open_dataset(path).episode_names == ["000000", "000001"]
    with pytest.raises(DatasetError, match="frames"):
        DatasetWriter.create(path, frame_shape=(8, 8, 3), action_names=NAMES, fps=15)
    with pytest.raises(DatasetError, match="actions"):
        DatasetWriter.create(path, frame_shape=(16, 12, 3), action_names=("A", "B"), fps=15)
    w = DatasetWriter(path)
    with pytest.raises(DatasetError, match="out of range"):
        w.write_episode(np.zeros((2, 16, 12, 3), np.uint8), np.array([0, 3]))
    with pytest.raises(DatasetError, match="uint8"):
        w.write_episode(np.zeros((2, 16, 12, 3), np.float32), np.array([0, 1]))
    with pytest.raises(DatasetError, match="one action per frame"):
        w.write_episode(np.zeros((2, 16, 12, 3), np.uint8), np.array([0, 1, 2]))
    assert len(open_dataset(path)) == 2  # refused writes left nothing behind
    assert temporary_files(path) == []


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a worldplay dataset"):
        DatasetWriter.create(tmp_path / "x", frame_shape=(8, 8, 3), action_names=NAMES, fps=15)
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "missing"),
        ("{not json", "not valid JSON"),
        (json.dumps({"format": "other"}), "not a worldplay dataset"),
        (json.dumps({"format": "worldplay-dataset", "version": 99}), "version 99"),
        (json.dumps({"format": "worldplay-dataset", "version": 1, "frame_shape": [8, 8, 3]}), "action_names"),
    ],
)
def test_bad_dataset_json_is_named(tmp_path, content, message):
    (tmp_path / "ds").mkdir()
    if content is not None:
        (tmp_path / "ds" / "dataset.json").write_text(content)
    with pytest.raises(DatasetError, match=message) as e:
        open_dataset(tmp_path / "ds")
    assert "ds" in str(e.value)


def test_staged_episode_is_invisible_until_committed(tmp_path):
    """A writer that dies between writing and renaming leaves nothing visible."""
    w = DatasetWriter.create(tmp_path / "ds", frame_shape=(8, 8, 3), action_names=NAMES, fps=15)
    w.write_episode(np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 1, 2]))
    staged = w.stage_episode(np.ones((4, 8, 8, 3), np.uint8), np.array([1, 1, 1, 1]))
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 1 and temporary_files(tmp_path / "ds") == [staged]
    final = w.commit(staged)
    assert Path(final).name == "000001.episode"
    assert len(open_dataset(tmp_path / "ds")) == 2 and temporary_files(tmp_path / "ds") == []


def test_compression_of_game_frames(toy_dataset):
    ds = open_dataset(toy_dataset)
    raw = ds.num_frames * 64 * 64 * 3
    assert raw / ds.frame_bytes_compressed() > 5  # toy frames have a noisy background; Atari does far better
