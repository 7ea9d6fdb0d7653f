"""Import video files and per-episode action logs into a dataset (``worldplay import``).

``VIDEOS/NAME.mp4`` (or ``.gif``, other formats FFmpeg reads, or a folder ``NAME/`` of
PNG frames) pairs with ``ACTIONS/NAME.csv`` or ``ACTIONS/NAME.jsonl``: one row per
frame, row ``t`` holding the action taken at frame ``t`` (by name or index) and
optionally its ``reward`` and ``terminal``.

Videos without an action log are labelled by an inverse-dynamics model (``--labeller IDM``,
``worldplay train idm``): each frame gets the most likely action and its probability, kept as the
episode's ``confidence`` array. Logged and unlogged videos can be mixed; a log wins over the
labeller, and the dataset's action names are the labeller's.

Everything is checked before anything becomes visible: all logs are parsed first,
then each video is decoded and staged. Any error (missing or extra rows, unknown
action, unreadable video, frame count mismatch, empty input) names the file and
line, and leaves the output exactly as it was.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldplay.data.format import DatasetWriter, fsync_dir, open_dataset
from worldplay.data.sources import resize_frame
from worldplay.errors import DatasetError, ImportInputError
from worldplay.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, iter_video

LOG_SUFFIXES = (".csv", ".jsonl")
_TRUE = {"1", "true", "yes", "t", "y"}
_FALSE = {"0", "false", "no", "f", "n", ""}


@dataclasses.dataclass
class ActionLog:
    path: Path
    actions: np.ndarray | None  # [T] int32; None: a log without actions, for a labelled video
    rewards: np.ndarray | None  # [T] float32
    terminals: np.ndarray | None  # [T] bool
    lines: list[int]  # file line of each row, for error messages


def _action_index(value: object, names: Sequence[str], where: str) -> int:
    if isinstance(value, bool):
        raise ImportInputError(f"{where}: action {value!r} is neither a name nor an index")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        i = int(value)
        if not 0 <= i < len(names):
            raise ImportInputError(f"{where}: action index {i} out of range [0, {len(names)})")
        return i
    if isinstance(value, str) and value.strip() in names:
        return names.index(value.strip())
    raise ImportInputError(f"{where}: unknown action {value!r}; known actions: {', '.join(names)}")


def _parse_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ImportInputError(f"{where}: terminal {value!r} is not true/false/1/0")


def _parse_float(value: object, where: str) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ImportInputError(f"{where}: reward {value!r} is not a number") from None
    if not np.isfinite(x):
        raise ImportInputError(f"{where}: reward {value!r} is not finite")
    return x


def _rows_csv(path: Path, labelled: bool = False) -> list[tuple[int, dict[str, object]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [h.strip() for h in (reader.fieldnames or [])]
        if "action" not in fields and not labelled:
            raise ImportInputError(
                f"{path} line 1: the header must name an 'action' column (got {fields or 'nothing'}); "
                "e.g. 'action,reward,terminal'"
            )
        reader.fieldnames = fields
        rows = []
        for row in reader:
            if None in row:
                raise ImportInputError(f"{path} line {reader.line_num}: more values than header columns")
            if all((v or "").strip() == "" for v in row.values()):
                continue
            rows.append((reader.line_num, dict(row)))
    return rows


def _rows_jsonl(path: Path, labelled: bool = False) -> list[tuple[int, dict[str, object]]]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ImportInputError(f"{path} line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or ("action" not in obj and not labelled):
                raise ImportInputError(f'{path} line {n}: expected an object with an "action" key')
            rows.append((n, obj))
    return rows


def read_action_log(path: str | os.PathLike[str], action_names: Sequence[str], *, labelled: bool = False) -> ActionLog:
    """Parse one action log; errors name the file and line. With ``labelled`` (a labeller will give the actions)
    a log may have no ``action`` column: its actions are None and only its rewards and terminals count."""
    path = Path(path)
    try:
        rows = _rows_csv(path, labelled) if path.suffix.lower() == ".csv" else _rows_jsonl(path, labelled)
    except UnicodeDecodeError:
        raise ImportInputError(f"{path}: not a text file") from None
    except csv.Error as e:
        raise ImportInputError(f"{path}: not valid CSV ({e})") from None
    if not rows:
        raise ImportInputError(f"{path}: no rows; an action log needs one row per video frame")
    names = list(action_names)
    if labelled and all("action" not in r for _, r in rows):
        actions = None
    else:
        actions = np.array([_action_index(r.get("action"), names, f"{path} line {n}") for n, r in rows], np.int32)
    has_reward = any(str(r.get("reward", "")).strip() != "" for _, r in rows)
    has_terminal = any(str(r.get("terminal", "")).strip() != "" for _, r in rows)
    rewards = (
        np.array([_parse_float(r.get("reward", 0.0), f"{path} line {n}") for n, r in rows], np.float32)
        if has_reward
        else None
    )
    terminals = (
        np.array([_parse_bool(r.get("terminal", False), f"{path} line {n}") for n, r in rows], bool)
        if has_terminal
        else None
    )
    return ActionLog(path, actions, rewards, terminals, [n for n, _ in rows])


def _action_names_hint(logs: list[Path]) -> str:
    """The refusal of a new dataset without ``--action-names``, with the names the logs use, ready to paste."""
    names: dict[str, None] = {}  # in order of first appearance
    top = -1
    for path in logs:
        try:
            rows = _rows_csv(path) if path.suffix.lower() == ".csv" else _rows_jsonl(path)
        except (UnicodeDecodeError, csv.Error):
            continue  # the import proper names the bad file
        for _, r in rows:
            value = str(r.get("action", "")).strip()
            if value.lstrip("-").isdigit():
                top = max(top, int(value))
            elif value:
                names.setdefault(value, None)
    if names and top < 0:
        return (
            f"--action-names is required for a new dataset; the logs name {len(names)} actions: "
            f"--action-names {','.join(names)}  (the order fixes their indices)"
        )
    if top >= 0 and not names:
        return (
            f"--action-names is required for a new dataset; the logs hold action indices 0 to {top}: give "
            f"{top + 1} names in index order, e.g. --action-names {','.join(f'A{i}' for i in range(top + 1))}"
        )
    return (
        "--action-names is required for a new dataset, e.g. --action-names NOOP,UP,DOWN,LEFT,RIGHT "
        "(row values in the logs are these names or their indices)"
    )


def find_pairs(videos: Path, actions: Path | None, *, unlogged: bool = False) -> list[tuple[Path, Path | None]]:
    """Match ``VIDEOS/NAME.ext`` (or ``NAME/`` of PNGs) with ``ACTIONS/NAME.csv|jsonl``; with ``unlogged``
    (a labeller is given) a video may have no log (None)."""
    if actions is None and not unlogged:
        raise ImportInputError("--actions is required: a folder of action logs (or label the videos: --labeller IDM)")
    for d, what in ((videos, "--videos"), (actions, "--actions")):
        if d is not None and not d.is_dir():
            raise ImportInputError(f"{what} {d}: no such folder")
    vids: dict[str, Path] = {}
    for p in sorted(videos.iterdir()):
        if p.name.startswith("."):
            continue
        is_frames = p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir())
        if is_frames or (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES):
            if p.stem in vids:
                raise ImportInputError(f"{p}: two videos named {p.stem!r} ({vids[p.stem].name} and {p.name})")
            vids[p.stem] = p
    logs: dict[str, Path] = {}
    for p in sorted(actions.iterdir()) if actions is not None else []:
        if p.is_file() and p.suffix.lower() in LOG_SUFFIXES:
            if p.stem in logs:
                raise ImportInputError(f"{p}: two action logs named {p.stem!r}")
            logs[p.stem] = p
    if not vids:
        raise ImportInputError(
            f"--videos {videos}: no videos found (expected {', '.join(VIDEO_SUFFIXES)} files or folders of PNG frames)"
        )
    for stem, v in vids.items():
        if stem not in logs and not unlogged:
            raise ImportInputError(
                f"{v}: no action log; expected {actions / stem}.csv or .jsonl (or label it: --labeller IDM)"
            )
    for stem, a in logs.items():
        if stem not in vids:
            raise ImportInputError(f"{a}: no video named {stem!r} in {videos}")
    return [(vids[s], logs.get(s)) for s in sorted(vids)]


def _decode(video: Path, log: ActionLog | None, size: tuple[int, int]) -> np.ndarray:
    n_rows = len(log.lines) if log is not None else -1
    frames = []
    try:
        for frame in iter_video(video):
            if len(frames) == n_rows and log is not None:
                raise ImportInputError(
                    f"{log.path}: {n_rows} rows but {video} has more frames; "
                    "an action log needs exactly one row per frame"
                )
            frames.append(resize_frame(frame, size))
    except ImportInputError:
        raise
    except Exception as e:  # any decoder failure: name the file, keep the cause
        raise ImportInputError(f"{video}: unreadable video ({type(e).__name__}: {e})") from e
    if not frames:
        raise ImportInputError(f"{video}: no frames could be read")
    if log is not None and len(frames) < n_rows:
        raise ImportInputError(
            f"{log.path} line {log.lines[len(frames)]}: extra row; {video} has only {len(frames)} "
            f"frames and the log has {n_rows} rows (one row per frame)"
        )
    return np.stack(frames)


def import_videos(
    videos: str | os.PathLike[str],
    actions: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    action_names: Sequence[str] | None = None,
    size: tuple[int, int] = (64, 64),
    fps: float = 15.0,
    game: str | None = None,
    labeller: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Import every video of ``videos`` into ``out`` (created or appended to), with its action log from
    ``actions`` or, without one, labelled by the IDM ``labeller``. All or nothing."""
    videos, out = Path(videos), Path(out)
    actions = None if actions is None else Path(actions)
    pairs = find_pairs(videos, actions, unlogged=labeller is not None)
    idm = None
    if labeller is not None:
        from worldplay.idm import load_idm

        idm = load_idm(labeller)
        if action_names is not None and tuple(action_names) != idm.action_names:
            raise ImportInputError(
                f"--action-names {','.join(action_names)}: the labeller {labeller} has the actions "
                f"{','.join(idm.action_names)}; the dataset's actions are the labeller's (drop --action-names)"
            )
        if tuple(size) != idm.frame_shape[:2]:
            raise ImportInputError(
                f"--size {size[0]}x{size[1]}: the labeller {labeller} reads {idm.frame_shape[0]}x"
                f"{idm.frame_shape[1]} frames; import at --size {idm.frame_shape[0]}x{idm.frame_shape[1]}"
            )
        action_names = idm.action_names
    existing = (out / "dataset.json").exists()
    if existing:
        ds = open_dataset(out)
        if action_names is not None and tuple(action_names) != ds.action_names:
            raise DatasetError(
                f"{out}: existing dataset has actions {list(ds.action_names)}, --action-names gives "
                f"{list(action_names)}"
            )
        action_names = ds.action_names
        if ds.frame_shape[:2] != tuple(size):
            raise DatasetError(f"{out}: existing dataset has {ds.frame_shape[:2]} frames, --size gives {size}")
    elif action_names is None:
        raise ImportInputError(_action_names_hint([a for _, a in pairs if a is not None]))
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: exists and is not a worldplay dataset; choose another --out")
    logs = [None if a is None else read_action_log(a, list(action_names), labelled=idm is not None) for _, a in pairs]

    # A new dataset is built in a hidden sibling folder and renamed into place at the
    # end; an existing one gets staged episodes that are committed only at the end.
    target = out if existing else out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    if not existing:
        target.parent.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter.create(target, frame_shape=(*size, 3), action_names=action_names, fps=fps)
    staged: list[Path] = []
    try:
        for (video, _), log in tqdm(list(zip(pairs, logs, strict=True)), desc="import", disable=not progress):
            frames = _decode(video, log, size)
            meta = {"source": "import", "video": video.name, "fps": fps}
            if game:
                meta["game"] = game
            if log is not None:
                meta["actions_log"] = log.path.name
            if log is not None and log.actions is not None:
                staged.append(
                    writer.stage_episode(frames, log.actions, rewards=log.rewards, terminals=log.terminals, meta=meta)
                )
            else:
                assert idm is not None
                labels, confidence = idm.label(frames)
                meta.update(labeller=str(idm.path), mean_confidence=round(float(confidence.mean()), 4))
                rewards, terminals = (log.rewards, log.terminals) if log is not None else (None, None)
                staged.append(
                    writer.stage_episode(
                        frames, labels, rewards=rewards, terminals=terminals, confidence=confidence, meta=meta
                    )
                )
        if existing:
            return [writer.commit(s) for s in staged]
        paths = [writer.commit(s) for s in staged]
        if out.exists():  # an empty folder given as --out
            out.rmdir()
        os.rename(target, out)
        fsync_dir(out.parent)
        return [out / "episodes" / p.name for p in paths]
    except BaseException:
        for s in staged:
            writer.discard(s)
        if not existing:
            shutil.rmtree(target, ignore_errors=True)
        raise
