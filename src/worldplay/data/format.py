"""The on-disk dataset format (see docs/dataset-format.md).

A dataset is a folder::

    DATASET/
      dataset.json            format name and version, frame shape, action names, fps
      episodes/
        000000.episode        one self-contained file per episode
        000001.episode
        ...

An episode file holds a 16-byte preamble, a JSON header and a data section: the
actions (and optional rewards and terminals) as raw little-endian arrays, then the
frames as independently compressed zstd chunks of ``chunk_frames`` frames each, so
any window of frames is read by decompressing only the chunks it touches.

Writes are atomic: an episode is written to a hidden temporary file in
``episodes/``, flushed to disk and renamed into place, so a reader sees an episode
complete or not at all, and a writer killed at any moment leaves every earlier
episode intact.

Alignment: ``actions[t]`` is the action chosen after seeing ``frames[t]``; it
produces ``frames[t + 1]``. The last action of an episode produced no recorded
frame. ``rewards[t]`` and ``terminals[t]`` are the outcome of ``actions[t]``. An episode whose actions
were labelled by an inverse-dynamics model (``worldplay import --labeller``) keeps ``confidence[t]``, the
labeller's probability of ``actions[t]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from worldplay.errors import DatasetError

FORMAT_NAME = "worldplay-dataset"
FORMAT_VERSION = 1
EPISODE_MAGIC = b"WPEP"
EPISODE_SUFFIX = ".episode"
DEFAULT_CHUNK_FRAMES = 8
DEFAULT_COMPRESSION_LEVEL = 3
_PREAMBLE = struct.Struct("<4sIQ")  # magic, format version, header length in bytes
_EPISODE_NAME = re.compile(r"^(\d{6,})\.episode$")
_ARRAY_DTYPES = {"actions": "<i4", "rewards": "<f4", "terminals": "|u1", "confidence": "<f4"}


@dataclasses.dataclass(frozen=True)
class Episode:
    """One episode: ``frames[t]`` is seen, ``actions[t]`` is taken, ``frames[t+1]`` results."""

    frames: np.ndarray  # [T, H, W, 3] uint8
    actions: np.ndarray  # [T] int32
    rewards: np.ndarray | None = None  # [T] float32, reward for actions[t]
    terminals: np.ndarray | None = None  # [T] bool, actions[t] ended the game
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])


@dataclasses.dataclass(frozen=True)
class _EpisodeIndex:
    """What a reader keeps of an episode file: its header, parsed."""

    path: str
    length: int
    data_offset: int
    file_size: int
    chunk_frames: int
    chunks: tuple[tuple[int, int, int], ...]  # (offset, nbytes, crc32) relative to data_offset
    arrays: Mapping[str, Mapping[str, Any]]
    meta: Mapping[str, Any]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` so that it is either the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _check_frame_shape(frame_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(x) for x in frame_shape)
    if len(shape) == 2:
        shape = (*shape, 3)
    if len(shape) != 3 or shape[2] != 3 or shape[0] < 1 or shape[1] < 1:
        raise DatasetError(f"frame shape must be (H, W, 3) with H, W >= 1, got {tuple(frame_shape)}")
    return shape  # type: ignore[return-value]


def _check_action_names(action_names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(str(a) for a in action_names)
    if not names:
        raise DatasetError("a dataset needs at least one action name")
    if len(set(names)) != len(names):
        dup = sorted({a for a in names if names.count(a) > 1})
        raise DatasetError(f"action names must be unique; repeated: {', '.join(dup)}")
    if any(not a or a != a.strip() for a in names):
        raise DatasetError(f"action names must be non-empty without surrounding spaces: {names}")
    return names


class Dataset:
    """A read-only view of a dataset folder: random access to episodes and windows.

    Instances are cheap to pickle (paths and parsed headers only), so they can be
    handed to Grain worker processes.
    """

    def __init__(self, path: str | os.PathLike[str], *, _episodes: Sequence[Path] | None = None):
        self.path = Path(path)
        self.info: dict[str, Any] = _load_info(self.path)
        self.frame_shape = _check_frame_shape(self.info["frame_shape"])
        self.action_names = _check_action_names(self.info["action_names"])
        self.fps = float(self.info.get("fps", 15.0))
        files = _episode_files(self.path) if _episodes is None else _episodes
        self._episodes: list[_EpisodeIndex] = [_read_index(p, self.frame_shape) for p in files]

    # -- sizes -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._episodes)

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, episodes={len(self)}, frames={self.num_frames})"

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self._episodes)

    @property
    def episode_lengths(self) -> list[int]:
        return [e.length for e in self._episodes]

    @property
    def episode_names(self) -> list[str]:
        return [Path(e.path).stem for e in self._episodes]

    def episode_path(self, i: int) -> Path:
        return Path(self._episodes[i].path)

    def episode_meta(self, i: int) -> Mapping[str, Any]:
        return self._episodes[i].meta

    # -- reading ---------------------------------------------------------------
    def __getitem__(self, i: int) -> Episode:
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range for a dataset of {len(self)} episodes")
        e = self._episodes[i]
        frames = self.read_frames(i, 0, e.length)
        arrays = _read_arrays(e)
        return Episode(
            frames=frames,
            actions=arrays["actions"],
            rewards=arrays.get("rewards"),
            terminals=arrays.get("terminals"),
            meta=e.meta,
        )

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def read_actions(self, i: int) -> np.ndarray:
        """Actions of episode ``i``, int32 [T], without touching its frames."""
        return _read_arrays(self._episodes[i], names=("actions",))["actions"]

    def read_outcomes(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(rewards float32 [T], terminals bool [T]) of episode ``i``, without its frames; zeros for an episode
        recorded without them."""
        arrays = _read_arrays(self._episodes[i], names=("rewards", "terminals"))
        T = self._episodes[i].length
        return (
            arrays.get("rewards", np.zeros(T, np.float32)).astype(np.float32),
            arrays.get("terminals", np.zeros(T, bool)).astype(bool),
        )

    def read_confidence(self, i: int) -> np.ndarray | None:
        """The labeller's probability of each action of episode ``i`` (float32 [T]); None for logged actions."""
        return _read_arrays(self._episodes[i], names=("confidence",)).get("confidence")

    def episodes_with(self, name: str, episodes: Sequence[int] | None = None) -> int:
        """How many episodes (of ``episodes``, default all) recorded the per-frame array ``name`` (``"rewards"``)."""
        chosen = self._episodes if episodes is None else [self._episodes[i] for i in episodes]
        return sum(name in e.arrays for e in chosen)

    def read_frames(self, i: int, start: int, length: int) -> np.ndarray:
        """Frames ``start .. start+length-1`` of episode ``i``, uint8 [length, H, W, 3].

        Only the compressed chunks that overlap the window are read and decoded.
        """
        e = self._episodes[i]
        if start < 0 or length < 1 or start + length > e.length:
            raise IndexError(f"window [{start}, {start + length}) outside episode of {e.length} frames")
        c = e.chunk_frames
        first, last = start // c, (start + length - 1) // c
        lo = e.chunks[first][0]
        hi = e.chunks[last][0] + e.chunks[last][1]
        blob = _pread(e.path, e.data_offset + lo, hi - lo)
        frame_bytes = int(np.prod(self.frame_shape))
        out = np.empty(((last - first + 1) * c, *self.frame_shape), np.uint8)
        flat = out.reshape(-1)
        pos = 0
        dctx = zstandard.ZstdDecompressor()
        for k in range(first, last + 1):
            off, nbytes, _ = e.chunks[k]
            n = min(c, e.length - k * c)
            try:
                raw = dctx.decompress(blob[off - lo : off - lo + nbytes], max_output_size=n * frame_bytes)
            except zstandard.ZstdError as err:
                raise DatasetError(
                    f"{e.path}: frame chunk {k} is corrupt ({err}); run `worldplay data validate`"
                ) from err
            if len(raw) != n * frame_bytes:
                raise DatasetError(f"{e.path}: frame chunk {k} holds {len(raw)} bytes, expected {n * frame_bytes}")
            flat[pos : pos + len(raw)] = np.frombuffer(raw, np.uint8)
            pos += len(raw)
        skip = start - first * c
        return out[skip : skip + length]

    def read_window(self, i: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """``(frames [length, H, W, 3] uint8, actions [length] int32)`` of episode ``i``."""
        frames = self.read_frames(i, start, length)
        actions = self.read_actions(i)[start : start + length]
        return frames, actions

    # -- summaries -------------------------------------------------------------
    def fingerprint(self) -> str:
        """A short hash naming this exact content (format, shapes, actions, episode checksums)."""
        h = hashlib.sha256()
        h.update(json.dumps([FORMAT_VERSION, self.frame_shape, self.action_names]).encode())
        for e in self._episodes:
            h.update(Path(e.path).name.encode())
            h.update(json.dumps([e.length, [c[2] for c in e.chunks]]).encode())
            h.update(json.dumps({k: v["crc32"] for k, v in sorted(e.arrays.items())}).encode())
        return h.hexdigest()[:16]

    def size_on_disk(self) -> int:
        return sum(e.file_size for e in self._episodes) + (self.path / "dataset.json").stat().st_size

    def frame_bytes_compressed(self) -> int:
        return sum(sum(c[1] for c in e.chunks) for e in self._episodes)


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open a dataset folder for reading. Raises :class:`DatasetError` with the file at fault."""
    return Dataset(path)


def _load_info(root: Path) -> dict[str, Any]:
    """Read and check ``dataset.json``; errors name the file and the key."""
    info_path = root / "dataset.json"
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder (record one with `worldplay record`)")
    if not info_path.is_file():
        raise DatasetError(f"{info_path}: missing; {root} is not a worldplay dataset")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{info_path}: not valid JSON ({e})") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise DatasetError(f"{info_path}: 'format' is not {FORMAT_NAME!r}; not a worldplay dataset")
    if info.get("version") != FORMAT_VERSION:
        raise DatasetError(
            f"{info_path}: format version {info.get('version')!r} is not supported "
            f"(this worldplay reads version {FORMAT_VERSION}); upgrade worldplay"
        )
    for key in ("frame_shape", "action_names"):
        if key not in info:
            raise DatasetError(f"{info_path}: missing key {key!r}")
    try:
        _check_frame_shape(info["frame_shape"])
        _check_action_names(info["action_names"])
        float(info.get("fps", 15.0))
    except (DatasetError, TypeError, ValueError) as e:
        raise DatasetError(f"{info_path}: {e}") from e
    return info


def _episode_files(root: Path) -> list[Path]:
    ep_dir = root / "episodes"
    if not ep_dir.is_dir():
        return []
    names = sorted(n for n in os.listdir(ep_dir) if _EPISODE_NAME.match(n))
    return [ep_dir / n for n in names]


def temporary_files(root: str | os.PathLike[str]) -> list[Path]:
    """Leftovers of interrupted writes: invisible to readers, safe to delete."""
    ep_dir = Path(root) / "episodes"
    if not ep_dir.is_dir():
        return []
    return sorted(ep_dir / n for n in os.listdir(ep_dir) if ".tmp-" in n)


def _pread(path: str, offset: int, nbytes: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, nbytes, offset)
    finally:
        os.close(fd)
    if len(data) != nbytes:
        raise DatasetError(
            f"{path}: file is truncated (wanted {nbytes} bytes at offset {offset}, got {len(data)}); "
            "run `worldplay data validate`"
        )
    return data


def _read_index(path: Path, frame_shape: tuple[int, int, int]) -> _EpisodeIndex:
    p = str(path)
    try:
        with open(path, "rb") as f:
            pre = f.read(_PREAMBLE.size)
            if len(pre) != _PREAMBLE.size:
                raise DatasetError(f"{p}: file is truncated (no header); delete it or re-record it")
            magic, version, header_len = _PREAMBLE.unpack(pre)
            if magic != EPISODE_MAGIC:
                raise DatasetError(f"{p}: not a worldplay episode file (bad magic bytes)")
            if version != FORMAT_VERSION:
                raise DatasetError(f"{p}: episode format version {version} is not supported")
            raw = f.read(header_len)
            if len(raw) != header_len:
                raise DatasetError(f"{p}: file is truncated inside its header")
            file_size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise DatasetError(f"{p}: cannot be read ({e})") from e
    try:
        header = json.loads(raw)
        length = int(header["length"])
        shape = tuple(header["frame_shape"])
        chunk_frames = int(header["chunk_frames"])
        chunks = tuple((int(o), int(n), int(c)) for o, n, c in header["chunks"])
        arrays = header["arrays"]
        meta = header.get("meta", {})
        ends = [o + n for o, n, _ in chunks]
        for name, spec in arrays.items():
            if name not in _ARRAY_DTYPES or spec["dtype"] != _ARRAY_DTYPES[name]:
                raise ValueError(f"unknown array {name!r} of dtype {spec.get('dtype')!r}")
            ends.append(int(spec["offset"]) + int(spec["nbytes"]))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{p}: header is malformed ({type(e).__name__}: {e})") from e
    if shape != frame_shape:
        raise DatasetError(f"{p}: frames are {shape}, but the dataset's frame shape is {frame_shape}")
    if length < 1 or chunk_frames < 1 or len(chunks) != -(-length // chunk_frames):
        raise DatasetError(f"{p}: header is inconsistent (length {length}, {len(chunks)} chunks)")
    if "actions" not in arrays:
        raise DatasetError(f"{p}: header lists no actions array")
    data_offset = _PREAMBLE.size + header_len
    end = max(ends)
    if data_offset + end > file_size:
        raise DatasetError(
            f"{p}: file is truncated ({file_size} bytes, header describes {data_offset + end}); "
            "delete it or re-record it"
        )
    return _EpisodeIndex(p, length, data_offset, file_size, chunk_frames, chunks, arrays, meta)


def _read_arrays(e: _EpisodeIndex, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    out = {}
    for name, spec in e.arrays.items():
        if names is not None and name not in names:
            continue
        data = _pread(e.path, e.data_offset + spec["offset"], spec["nbytes"])
        arr = np.frombuffer(data, np.dtype(spec["dtype"])).copy()
        if arr.shape != (e.length,):
            raise DatasetError(f"{e.path}: {name} has {arr.shape[0]} entries, expected {e.length}")
        if name == "actions":
            arr = arr.astype(np.int32)
        elif name == "terminals":
            arr = arr.astype(bool)
        out[name] = arr
    return out


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def encode_episode(
    frames: np.ndarray,
    actions: np.ndarray,
    *,
    rewards: np.ndarray | None = None,
    terminals: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    level: int = DEFAULT_COMPRESSION_LEVEL,
) -> bytes:
    """Serialise one episode to the bytes of an episode file (no validation against a dataset)."""
    T = int(frames.shape[0])
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    sections: list[bytes] = []
    offset = 0
    arrays: dict[str, dict[str, Any]] = {}
    for name, arr in (("actions", actions), ("rewards", rewards), ("terminals", terminals), ("confidence", confidence)):
        if arr is None:
            continue
        data = np.ascontiguousarray(arr, dtype=_ARRAY_DTYPES[name]).tobytes()
        arrays[name] = {
            "offset": offset,
            "nbytes": len(data),
            "dtype": _ARRAY_DTYPES[name],
            "crc32": zlib.crc32(data),
        }
        sections.append(data)
        offset += len(data)
    chunks = []
    frames = np.ascontiguousarray(frames)
    for s in range(0, T, chunk_frames):
        blob = cctx.compress(frames[s : s + chunk_frames].tobytes())
        chunks.append([offset, len(blob), zlib.crc32(blob)])
        sections.append(blob)
        offset += len(blob)
    header = {
        "length": T,
        "frame_shape": list(frames.shape[1:]),
        "chunk_frames": chunk_frames,
        "compression": "zstd",
        "arrays": arrays,
        "chunks": chunks,
        "meta": dict(meta or {}),
    }
    raw = json.dumps(header, sort_keys=True, default=_json_default).encode()
    return _PREAMBLE.pack(EPISODE_MAGIC, FORMAT_VERSION, len(raw)) + raw + b"".join(sections)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"episode metadata value {x!r} of type {type(x).__name__} is not JSON serialisable")


class DatasetWriter:
    """Appends episodes to a dataset folder, one atomic file per episode.

    ``DatasetWriter.create(path, ...)`` makes a new dataset or opens an existing one
    whose frame shape and action names match; anything else is refused before a
    byte is written.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        ds = Dataset(self.path)  # validates dataset.json and every header
        self.frame_shape = ds.frame_shape
        self.action_names = ds.action_names
        self.fps = ds.fps
        self._ep_dir = self.path / "episodes"
        self._ep_dir.mkdir(exist_ok=True)
        self.chunk_frames = int(ds.info.get("chunk_frames", DEFAULT_CHUNK_FRAMES))

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        frame_shape: Sequence[int],
        action_names: Sequence[str],
        fps: float,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        extra: Mapping[str, Any] | None = None,
    ) -> DatasetWriter:
        path = Path(path)
        shape = _check_frame_shape(frame_shape)
        names = _check_action_names(action_names)
        info_path = path / "dataset.json"
        if info_path.exists():
            existing = Dataset(path)
            if existing.frame_shape != shape:
                raise DatasetError(
                    f"{path}: existing dataset has frames {existing.frame_shape}, new episodes "
                    f"would be {shape}; choose another --out or the same size"
                )
            if existing.action_names != names:
                raise DatasetError(
                    f"{path}: existing dataset has actions {list(existing.action_names)}, new "
                    f"episodes use {list(names)}; choose another --out"
                )
            return cls(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise DatasetError(f"{path}: exists and is not a worldplay dataset (no dataset.json); choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        (path / "episodes").mkdir(exist_ok=True)
        info = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "frame_shape": list(shape),
            "action_names": list(names),
            "fps": float(fps),
            "chunk_frames": int(chunk_frames),
            **dict(extra or {}),
        }
        write_json_atomic(info_path, info)
        return cls(path)

    def _check(self, frames: np.ndarray, actions: np.ndarray, rewards, terminals, confidence=None) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != self.frame_shape:
            raise DatasetError(
                f"frames must be uint8 [T, {', '.join(map(str, self.frame_shape))}], "
                f"got {frames.dtype} {list(frames.shape)}"
            )
        T = frames.shape[0]
        if T < 1:
            raise DatasetError("an episode needs at least one frame")
        if actions.shape != (T,):
            raise DatasetError(f"need one action per frame: {T} frames, actions shape {list(actions.shape)}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise DatasetError(f"actions must be integers, got {actions.dtype}")
        n = len(self.action_names)
        bad = np.flatnonzero((actions < 0) | (actions >= n))
        if bad.size:
            raise DatasetError(f"action {int(actions[bad[0]])} at frame {int(bad[0])} is out of range [0, {n})")
        for name, arr in (("rewards", rewards), ("terminals", terminals), ("confidence", confidence)):
            if arr is not None and np.shape(arr) != (T,):
                raise DatasetError(f"{name} must have shape [{T}], got {list(np.shape(arr))}")

    def _next_id(self) -> int:
        ids = [int(m.group(1)) for n in os.listdir(self._ep_dir) if (m := _EPISODE_NAME.match(n))]
        return max(ids, default=-1) + 1

    def stage_episode(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        *,
        rewards: np.ndarray | None = None,
        terminals: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write an episode to a hidden temporary file, durable but invisible to readers."""
        actions = np.asarray(actions)
        self._check(frames, actions, rewards, terminals, confidence)
        blob = encode_episode(
            frames,
            actions,
            rewards=rewards,
            terminals=terminals,
            confidence=confidence,
            meta=meta,
            chunk_frames=self.chunk_frames,
        )
        tmp = self._ep_dir / f".staged{EPISODE_SUFFIX}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def commit(self, staged: Path) -> Path:
        """Make a staged episode visible under the next free episode number, atomically.

        A hard link to the final name fails if that name exists, so a commit never
        overwrites an episode; where the file system has no hard links, a rename
        onto a name checked to be free is used instead.
        """
        while True:
            final = self._ep_dir / f"{self._next_id():06d}{EPISODE_SUFFIX}"
            try:
                os.link(staged, final)
            except FileExistsError:
                continue
            except OSError:  # no hard links here (some network and FUSE file systems)
                if final.exists():
                    continue
                os.rename(staged, final)
                fsync_dir(self._ep_dir)
                return final
            os.unlink(staged)
            fsync_dir(self._ep_dir)
            return final

    def discard(self, staged: Path) -> None:
        Path(staged).unlink(missing_ok=True)

    def write_episode(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        *,
        rewards: np.ndarray | None = None,
        terminals: np.ndarray | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Append one episode atomically and return its file."""
        staged = self.stage_episode(frames, actions, rewards=rewards, terminals=terminals, meta=meta)
        try:
            return self.commit(staged)
        except BaseException:
            self.discard(staged)
            raise


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def validate_dataset(path: str | os.PathLike[str]) -> tuple[Dataset | None, list[Problem]]:
    """Read every byte of every episode; return the good part of the dataset and what is wrong.

    One bad episode does not hide the others: each problem names its file.
    """
    root = Path(path)
    try:
        ds = Dataset(root, _episodes=[])
    except DatasetError as e:
        return None, [Problem(str(root), str(e))]
    problems: list[Problem] = []
    good: list[_EpisodeIndex] = []
    frame_bytes = int(np.prod(ds.frame_shape))
    dctx = zstandard.ZstdDecompressor()
    for f in _episode_files(root):
        try:
            e = _read_index(f, ds.frame_shape)
        except DatasetError as err:
            problems.append(Problem(str(f), str(err).removeprefix(f"{f}: ")))
            continue
        bad = _validate_episode(e, frame_bytes, len(ds.action_names), dctx)
        problems.extend(Problem(str(f), b) for b in bad)
        if not bad:
            good.append(e)
    ds._episodes = good
    return ds, problems


def _validate_episode(
    e: _EpisodeIndex, frame_bytes: int, n_actions: int, dctx: zstandard.ZstdDecompressor
) -> list[str]:
    bad: list[str] = []
    try:
        with open(e.path, "rb") as f:
            f.seek(e.data_offset)
            data = f.read()
    except OSError as err:
        return [f"cannot be read ({err})"]
    for name, spec in e.arrays.items():
        blob = data[spec["offset"] : spec["offset"] + spec["nbytes"]]
        if zlib.crc32(blob) != spec["crc32"]:
            bad.append(f"{name} array fails its checksum (file altered or damaged)")
            continue
        arr = np.frombuffer(blob, np.dtype(spec["dtype"]))
        if arr.shape != (e.length,):
            bad.append(f"{name} has {arr.shape[0]} entries, expected {e.length}")
        elif name == "actions" and ((arr < 0) | (arr >= n_actions)).any():
            t = int(np.flatnonzero((arr < 0) | (arr >= n_actions))[0])
            bad.append(f"action {int(arr[t])} at frame {t} is out of range [0, {n_actions})")
        elif name == "rewards" and not np.isfinite(arr).all():
            bad.append("rewards contain NaN or infinity")
        elif name == "confidence" and not ((arr >= 0) & (arr <= 1)).all():
            bad.append("confidence values outside [0, 1]")
    for k, (off, nbytes, crc) in enumerate(e.chunks):
        blob = data[off : off + nbytes]
        if zlib.crc32(blob) != crc:
            bad.append(f"frame chunk {k} fails its checksum (file altered or damaged)")
            continue
        n = min(e.chunk_frames, e.length - k * e.chunk_frames)
        try:
            raw = dctx.decompress(blob, max_output_size=n * frame_bytes)
        except zstandard.ZstdError as err:
            bad.append(f"frame chunk {k} does not decompress ({err})")
            continue
        if len(raw) != n * frame_bytes:
            bad.append(f"frame chunk {k} holds {len(raw)} bytes, expected {n * frame_bytes} (wrong shape)")
    expected_end = e.data_offset + max(
        [o + n for o, n, _ in e.chunks] + [a["offset"] + a["nbytes"] for a in e.arrays.values()]
    )
    if e.file_size != expected_end:
        bad.append(f"file has {e.file_size - expected_end} unexpected trailing bytes")
    return bad


def summarize(ds: Dataset) -> dict[str, Any]:
    """Counts for ``worldplay data info``: episodes, frames, action histogram, sizes."""
    counts = np.zeros(len(ds.action_names), np.int64)
    for i in range(len(ds)):
        counts += np.bincount(ds.read_actions(i), minlength=len(ds.action_names))
    raw = ds.num_frames * int(np.prod(ds.frame_shape))
    compressed = ds.frame_bytes_compressed()
    lengths = ds.episode_lengths
    return {
        "path": str(ds.path),
        "format_version": FORMAT_VERSION,
        "frame_shape": list(ds.frame_shape),
        "fps": ds.fps,
        "episodes": len(ds),
        "frames": ds.num_frames,
        "episode_length": {
            "min": min(lengths, default=0),
            "mean": float(np.mean(lengths)) if lengths else 0.0,
            "max": max(lengths, default=0),
        },
        "actions": {name: int(c) for name, c in zip(ds.action_names, counts, strict=True)},
        "size_on_disk_bytes": ds.size_on_disk(),
        "frames_raw_bytes": raw,
        "frames_compressed_bytes": compressed,
        "compression_ratio": raw / compressed if compressed else None,
        "fingerprint": ds.fingerprint(),
        "games": sorted({str(ds.episode_meta(i).get("game", "?")) for i in range(len(ds))}),
        "labelled_episodes": ds.episodes_with("confidence"),  # actions from an IDM (import --labeller)
    }
