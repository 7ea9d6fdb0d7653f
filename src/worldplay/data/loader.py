"""The Grain pipeline: shuffled windows of T frames and their actions, in batches.

    loader = make_loader("data/toy", window=16, batch_size=32, seed=0)
    it = iter(loader)
    batch = next(it)          # {"frames": uint8 [B, T, H, W, 3], "actions": int32 [B, T]}
    state = it.get_state()    # JSON-able; it.set_state(state) continues exactly there

Episodes are split into train and held-out by a hash of (seed, episode name), so
the split of an episode never changes when episodes are added and held-out
episodes are never trained on. Every window of ``window`` consecutive frames of a
train episode is one element; the elements are shuffled (differently each epoch,
fixed by the seed), sharded over JAX processes and batched.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, Literal

import grain
import numpy as np

from worldplay.data.format import Dataset, open_dataset
from worldplay.errors import DatasetError

Split = Literal["train", "heldout", "all"]


def _episode_hash(seed: int, name: str) -> float:
    digest = hashlib.sha256(f"worldplay-split:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def split_episodes(dataset: Dataset, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, heldout)`` episode indices. An episode is held out iff its hash < ``holdout``.

    If that holds out nothing although ``holdout > 0`` and there are at least two
    episodes, the episode with the smallest hash is held out, so evaluation always
    has data.
    """
    names = dataset.episode_names
    hashes = [_episode_hash(seed, n) for n in names]
    held = {i for i, h in enumerate(hashes) if h < holdout}
    if holdout > 0 and not held and len(names) >= 2:
        held = {int(np.argmin(hashes))}
    train = [i for i in range(len(names)) if i not in held]
    return train, sorted(held)


class WindowSource:
    """A Grain random-access data source over all windows of ``window`` frames.

    Element ``i`` is ``{"frames": uint8 [T, H, W, 3], "actions": int32 [T]}``; only
    the compressed chunks a window touches are decoded. Given ``latents`` (one row
    per frame of the dataset, episodes in order, e.g. a memory-mapped cache of
    encoded frames), elements hold ``"latents"`` [T, ...] instead of frames. With
    ``outcomes``, elements also hold ``"rewards"`` float32 [T] and ``"terminals"`` bool [T]
    (zeros for an episode recorded without them).
    """

    def __init__(
        self,
        dataset: Dataset,
        window: int,
        episodes: Sequence[int],
        latents: np.ndarray | None = None,
        outcomes: bool = False,
    ):
        self.dataset = dataset
        self.window = window
        self.latents = latents
        self.outcomes = outcomes
        self._offsets = np.concatenate([[0], np.cumsum(dataset.episode_lengths)]).astype(np.int64)
        if latents is not None and len(latents) != self._offsets[-1]:
            raise DatasetError(
                f"{dataset.path}: {len(latents)} cached latents for {self._offsets[-1]} frames; "
                "the latent cache is stale, delete it to re-encode"
            )
        lengths = dataset.episode_lengths
        self.episodes = np.array([e for e in episodes if lengths[e] >= window], np.int64)
        counts = np.array([lengths[e] - window + 1 for e in self.episodes], np.int64)
        self._ends = np.cumsum(counts)
        self._actions: dict[int, np.ndarray] = {}
        self._outcomes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, i: int) -> tuple[int, int]:
        """Element index -> (episode index, first frame)."""
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range [0, {len(self)})")
        k = int(np.searchsorted(self._ends, i, side="right"))
        start = i - (int(self._ends[k - 1]) if k else 0)
        return int(self.episodes[k]), start

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        ep, start = self.locate(int(i))
        actions = self._actions.get(ep)
        if actions is None:
            actions = self._actions[ep] = self.dataset.read_actions(ep)
        acts = actions[start : start + self.window]
        if self.latents is not None:
            first = int(self._offsets[ep]) + start
            out = {"latents": np.asarray(self.latents[first : first + self.window]), "actions": acts}
        else:
            out = {"frames": self.dataset.read_frames(ep, start, self.window), "actions": acts}
        if self.outcomes:
            if ep not in self._outcomes:
                self._outcomes[ep] = self.dataset.read_outcomes(ep)
            rewards, terminals = self._outcomes[ep]
            out["rewards"] = rewards[start : start + self.window]
            out["terminals"] = terminals[start : start + self.window]
        return out

    def __repr__(self) -> str:
        return f"WindowSource({self.dataset.path}, window={self.window}, windows={len(self)})"


def make_loader(
    dataset: Dataset | str | os.PathLike[str],
    *,
    window: int,
    batch_size: int,
    split: Split = "train",
    holdout: float = 0.1,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_threads: int = 2,
    prefetch: int | None = None,
    latents: np.ndarray | None = None,
    outcomes: bool = False,
) -> grain.IterDataset:
    """A Grain ``IterDataset`` of batches ``{"frames": [B, T, H, W, 3], "actions": [B, T]}``.

    ``batch_size`` is per process. ``shard_index``/``shard_count`` default to
    ``jax.process_index()``/``jax.process_count()``. ``num_epochs=None`` repeats
    forever (training); ``1`` gives one pass (evaluation; the last partial batch is
    dropped). ``iter(loader)`` has ``get_state()``/``set_state()`` for exact resume.
    With ``latents`` (see :class:`WindowSource`) batches hold ``"latents"`` instead of frames; with
    ``outcomes`` they also hold ``"rewards"`` and ``"terminals"``.
    """
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    train, held = split_episodes(ds, holdout, seed)
    episodes = {"train": train, "heldout": held, "all": list(range(len(ds)))}[split]
    source = WindowSource(ds, window, episodes, latents, outcomes)
    if len(source) == 0:
        raise DatasetError(
            f"{ds.path}: the {split} split ({len(episodes)} episodes) has no episode of at least "
            f"{window} frames; record longer or more episodes, or lower data.window"
        )
    return batched(
        source, batch_size=batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        shard_index=shard_index, shard_count=shard_count, num_threads=num_threads, prefetch=prefetch,
    )  # fmt: skip


def batched(
    source: Any,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_threads: int = 2,
    prefetch: int | None = None,
) -> grain.IterDataset:
    """Any random-access source of dict elements (``len`` and ``[i]``) as the loader's resumable pipeline:
    shuffled per epoch by ``seed``, repeated ``num_epochs`` times (None: forever), sharded over processes
    (defaults as :func:`make_loader`), batched with the last partial batch dropped."""
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    mds = grain.MapDataset.source(source)
    if shuffle:
        mds = mds.shuffle(seed=seed)
    mds = mds.repeat(num_epochs)
    mds = mds[shard_index::shard_count]
    mds = mds.batch(batch_size, drop_remainder=True)
    if num_threads == 0:
        return mds.to_iter_dataset()
    prefetch = max(4, num_threads) if prefetch is None else prefetch
    return mds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
