"""Running an inverse-dynamics model: load it, label frames, evaluate it, and score a world's action following.

    idm = load_idm("checkpoints/boxing/idm")          # an IDM folder, or a world folder that has one
    actions, confidence = idm.label(frames_THWC)      # the action taken at each frame, and its probability
    report = evaluate_idm("checkpoints/boxing/idm", "data/boxing", "eval/boxing-idm")

An IDM folder is what ``worldplay train idm`` writes (``<run>/model``): ``params/`` and ``part.json``
(kind ``idm``: config, action names, frame shape, the dataset and split it trained on). A world folder
may hold one as ``idm/``, listed in its world.json like every other file.

What the frames can show: an action's *direction* (the UP/DOWN/LEFT/RIGHT in its name), whether it
*fires*, or *no-op*. Where a game has a player locator (:data:`PLAYER_LOCATORS`: Boxing, the toy game),
movement is scored only where the player moved at least one pixel; elsewhere the direction may leave
no trace (pushing into a wall).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay.errors import WorldplayError

DIRECTIONS = ("UP", "DOWN", "LEFT", "RIGHT")
HORIZON_RANGES = ((1, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 1 << 30))
LABEL_BATCH = 128


def direction(name: str) -> str:
    """The movement part of an action name: ``UPRIGHTFIRE`` -> ``UPRIGHT``, ``FIRE`` and ``NOOP`` -> ``""``."""
    return "".join(d for d in DIRECTIONS if d in name.upper())


def fires(name: str) -> bool:
    return "FIRE" in name.upper()


def is_noop(name: str) -> bool:
    return not direction(name) and not fires(name)


def action_parts(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per action index: its direction (str [A]), whether it fires (bool [A]), whether it is a no-op (bool [A]).
    Index them with an array of actions."""
    return (
        np.array([direction(n) for n in names]),
        np.array([fires(n) for n in names], bool),
        np.array([is_noop(n) for n in names], bool),
    )


# ---------------------------------------------------------------------------
# Player locators: where the player is in a frame, to tell moved from not moved
# ---------------------------------------------------------------------------


def _boxing_player(frame: np.ndarray) -> np.ndarray | None:
    from worldplay.policies.boxing import boxers

    return boxers(frame)[0]


def _toy_player(frame: np.ndarray) -> np.ndarray | None:
    from worldplay.data.sources import ToyGame

    ys, xs = np.nonzero(np.all(np.abs(frame.astype(np.int16) - ToyGame.PLAYER_COLOR) < 30, axis=-1))
    return None if len(ys) < 4 else np.array([ys.mean(), xs.mean()])


PLAYER_LOCATORS: dict[str, Callable[[np.ndarray], np.ndarray | None]] = {
    "ALE/Boxing-v5": _boxing_player,
    "toy": _toy_player,
    "toy:push": _toy_player,
}


def player_moved(frames_THWC: np.ndarray, game: str | None) -> np.ndarray | None:
    """[T - 1] bool: the player moved at least one pixel from frame t to t + 1 (None: no locator for ``game``)."""
    locate = PLAYER_LOCATORS.get(str(game))
    if locate is None:
        return None
    pos = [locate(f) for f in frames_THWC]
    moved = [
        a is not None and b is not None and float(np.max(np.abs(b - a))) >= 1.0 for a, b in itertools.pairwise(pos)
    ]
    return np.asarray(moved, bool)


# ---------------------------------------------------------------------------
# Loading and labelling
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Idm:
    """A trained IDM: the model, its part.json and the folder it came from."""

    model: Any
    meta: dict[str, Any]
    path: Path

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(self.meta["action_names"])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(int(x) for x in self.meta["frame_shape"])  # type: ignore[return-value]

    @property
    def before(self) -> int:
        return int(self.model.config.before)

    @cached_property
    def _probs(self) -> Callable[[jax.Array], jax.Array]:
        graphdef, state = nnx.split(self.model)

        @jax.jit
        def probs(state: nnx.State, frames_BFHWC: jax.Array) -> jax.Array:  # weights as an argument, not constants
            return jax.nn.softmax(nnx.merge(graphdef, state)(frames_BFHWC), axis=-1)

        return lambda frames_BFHWC: probs(state, frames_BFHWC)

    def probabilities(self, windows_BFHWC: np.ndarray) -> np.ndarray:
        """Action probabilities [B, A] for windows of ``before + 2`` frames (t - before ... t + 1)."""
        out = []
        for i in range(0, len(windows_BFHWC), LABEL_BATCH):
            chunk = windows_BFHWC[i : i + LABEL_BATCH]
            n = len(chunk)
            if n < LABEL_BATCH:  # one compiled shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], LABEL_BATCH - n, axis=0)])
            out.append(np.asarray(self._probs(jnp.asarray(chunk)))[:n])
        return np.concatenate(out) if out else np.zeros((0, len(self.action_names)), np.float32)

    def windows(self, frames_THWC: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The windows t - before ... t + 1 of ``frames`` for each t in ``ts``, clamped at the episode's ends."""
        offsets = np.arange(-self.before, 2)
        idx = np.clip(np.asarray(ts)[:, None] + offsets[None], 0, len(frames_THWC) - 1)
        return frames_THWC[idx]

    def label(self, frames_THWC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The action at every frame (int32 [T]) and its probability (float32 [T]). The last frame has no next
        frame to show its action: it is labelled from the last frame repeated (whatever it gets, no frame
        depends on it)."""
        T = len(frames_THWC)
        probs = np.concatenate(
            [self.probabilities(self.windows(frames_THWC, np.arange(s, min(s + 1024, T)))) for s in range(0, T, 1024)]
        )
        return probs.argmax(-1).astype(np.int32), probs.max(-1).astype(np.float32)


def idm_folder(path: str | os.PathLike[str]) -> Path | None:
    """The IDM folder at ``path``: the folder itself, or the ``idm/`` of a world folder; None if neither."""
    p = Path(path)
    for candidate in (p, p / "idm"):
        part = candidate / "part.json"
        if part.is_file():
            try:
                if json.loads(part.read_text()).get("kind") == "idm":
                    return candidate
            except ValueError:
                return None
    return None


def load_idm(path: str | os.PathLike[str]) -> Idm:
    """Load an IDM folder (or a world folder's ``idm/``)."""
    from worldplay.checkpoint import CheckpointError, restore_into
    from worldplay.config import IdmConfig, part_from_dict
    from worldplay.models.idm import InverseDynamics

    folder = idm_folder(path)
    if folder is None:
        raise CheckpointError(
            f"{path}: not an IDM folder and no idm/ in it (an IDM folder has part.json of kind 'idm'); train one: "
            "worldplay train idm --config C"
        )
    meta = json.loads((folder / "part.json").read_text())
    for key in ("config", "action_names", "frame_shape"):
        if key not in meta:
            raise CheckpointError(f"{folder / 'part.json'}: key {key!r} missing; export the IDM again")
    cfg = part_from_dict(IdmConfig, meta["config"], "idm")
    shape = tuple(int(x) for x in meta["frame_shape"])
    abstract = nnx.eval_shape(lambda: InverseDynamics(cfg, shape, len(meta["action_names"]), rngs=nnx.Rngs(0)))
    model = restore_into(abstract, folder / "params")
    return Idm(model, meta, folder)


def check_world_matches(world: str | os.PathLike[str], ds: Any) -> None:
    """Refuse to add an IDM trained on ``ds`` to a world with other actions or frames."""
    from worldplay.checkpoint import read_world_meta

    meta = read_world_meta(world)
    if tuple(meta["action_names"]) != tuple(ds.action_names) or tuple(meta["frame_shape"]) != tuple(ds.frame_shape):
        raise WorldplayError(
            f"{world}: its actions or frames ({len(meta['action_names'])} actions, {list(meta['frame_shape'])}) "
            f"are not those of {ds.path} ({len(ds.action_names)} actions, {list(ds.frame_shape)}); "
            "train the IDM on the world's own game"
        )


def attach_idm(world: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """Copy the IDM folder into ``world`` as ``idm/`` (replacing one there), atomically, listed in world.json."""
    from worldplay.checkpoint import derive_world, read_world_meta

    target, folder = Path(world), Path(folder)
    part = json.loads((folder / "part.json").read_text())
    if tuple(part["action_names"]) != tuple(read_world_meta(target)["action_names"]):
        raise WorldplayError(f"{folder}: this IDM's actions are not those of the world {target}")
    return derive_world(
        target, target, {"idm": folder}, {"idm": {k: v for k, v in part.items() if k not in ("format", "kind")}}
    )


# ---------------------------------------------------------------------------
# Evaluation on held-out episodes
# ---------------------------------------------------------------------------


def _accuracy(hit: np.ndarray) -> dict[str, Any]:
    return {"n": int(hit.size), "accuracy": float(hit.mean()) if hit.size else None}


def group_scores(pred: np.ndarray, true: np.ndarray, names: Sequence[str], moved: np.ndarray | None) -> dict:
    """Accuracy by what the frames can show (see the module docstring)."""
    dirs, fire, noop = action_parts(names)
    d_true, d_pred, f_true = dirs[true], dirs[pred], fire[true]
    has_dir = d_true != ""
    mask = has_dir if moved is None else has_dir & moved
    return {
        "movement_direction": {
            **_accuracy(d_pred[mask] == d_true[mask]),
            "where": "the player moved at least 1 pixel" if moved is not None else "every action with a direction",
        },
        "fire": _accuracy(fire[pred][f_true]),
        "noop": _accuracy(noop[pred[~has_dir & ~f_true]]),
    }


def replay_ceiling(
    ds: Any, episodes: Sequence[int], max_frames: int = 4000, moved: dict[int, np.ndarray] | None = None
) -> dict[str, Any] | None:
    """What a perfect IDM could reach on an ALE dataset, measured by replaying its episodes in the emulator.

    Each recorded episode is replayed (same seed, same actions, the recorded sticky-action probability, every
    frame checked against the recording). At each step the emulator's state is also stepped once with every
    action without sticky actions: the actions whose next frame equals the recorded one are the ones the
    frames cannot tell apart. The ceiling is the mean of 1/|that set| where the recorded action is in it, and 0
    where it is not (a sticky repeat made the frame: the recorded action left no trace). The movement-direction
    ceiling is the share of that set with the recorded direction, over the frames where the recorded action has a
    direction (and, given ``moved`` per episode, the player moved). An IDM that learns the recording policy's
    habits (a sticky policy repeats its last action) can beat this ceiling; no IDM can beat it on other videos.
    None for other sources.
    """
    import gymnasium as gym

    from worldplay.data.sources import ale_game_id, resize_frame

    eps = [e for e in episodes if str(ds.episode_meta(e).get("source", "")).startswith("ale:")]
    if not eps:
        return None
    import ale_py

    gym.register_envs(ale_py)
    meta0 = ds.episode_meta(eps[0])
    kw = {"frameskip": int(meta0.get("frameskip", 4)), "full_action_space": False}
    game = ale_game_id(str(meta0["game"]))
    sticky = gym.make(game, repeat_action_probability=float(meta0.get("repeat_action_probability", 0.25)), **kw)
    exact = gym.make(game, repeat_action_probability=0.0, **kw)
    exact.reset(seed=0)
    names = list(ds.action_names)
    size = tuple(ds.frame_shape[:2])
    oracle, direction_oracle, traceless, counted = [], [], 0, 0
    shown: dict[int, dict[str, np.ndarray]] = {}
    try:
        for e in eps:
            if counted >= max_frames:
                break
            n = min(ds.episode_lengths[e] - 1, max_frames - counted)
            frames, actions = ds.read_window(e, 0, n + 1)
            obs, _ = sticky.reset(seed=int(ds.episode_meta(e)["seed"]))
            if not np.array_equal(resize_frame(obs, size), frames[0]):
                return None  # not reproducible here (another emulator version): no ceiling rather than a wrong one
            shows_direction, shows_action = np.zeros(n, bool), np.zeros(n, bool)
            for t in range(n):
                state = sticky.unwrapped.ale.cloneState()
                same = []
                for a in range(len(names)):
                    exact.unwrapped.ale.restoreState(state)
                    o, *_ = exact.step(a)
                    if np.array_equal(resize_frame(o, size), frames[t + 1]):
                        same.append(a)
                rec = int(actions[t])
                shows_action[t] = same == [rec]
                shows_direction[t] = (
                    rec in same
                    and len(same) < len(names)
                    and bool(direction(names[rec]))
                    and all(direction(names[a]) == direction(names[rec]) for a in same)
                )
                oracle.append(1.0 / len(same) if rec in same else 0.0)
                traceless += rec not in same
                if direction(names[rec]) and (moved is None or moved[e][t]):
                    dirs = [direction(names[a]) == direction(names[rec]) for a in same]
                    direction_oracle.append(float(np.mean(dirs)) if same else 0.0)
                obs, *_ = sticky.step(rec)
                if not np.array_equal(resize_frame(obs, size), frames[t + 1]):
                    return None
            counted += n
            shown[e] = {"direction": shows_direction, "action": shows_action}
    finally:
        sticky.close()
        exact.close()
    return {
        "top1": float(np.mean(oracle)),
        "movement_direction": float(np.mean(direction_oracle)) if direction_oracle else None,
        "sticky_repeat_made_frame": traceless / max(len(oracle), 1),
        "frames": len(oracle),
        "how": "replayed in the emulator: 1/|actions giving the same next frame|, 0 where a sticky repeat made it",
        "shown": shown,  # per episode: where the next frame shows the recorded direction, the recorded action
    }


def evaluate_idm(
    idm_path: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    max_episodes: int | None = None,
    ceiling_frames: int = 4000,
    progress: bool = True,
) -> dict[str, Any]:
    """``worldplay eval IDM --dataset D --out DIR``: accuracy on held-out episodes, overall, per action and by what
    the frames can show, a confusion matrix (confusion.png) and, for ALE data, the measured ceiling."""
    from tqdm import tqdm

    from worldplay.data.format import open_dataset
    from worldplay.evaluate import held_out_episodes

    idm = load_idm(idm_path)
    ds = open_dataset(dataset)
    if tuple(ds.action_names) != idm.action_names or tuple(ds.frame_shape) != idm.frame_shape:
        raise WorldplayError(
            f"{ds.path}: its actions or frames ({len(ds.action_names)} actions, {list(ds.frame_shape)}) are not "
            f"the IDM's ({len(idm.action_names)} actions, {list(idm.frame_shape)})"
        )
    episodes, how = held_out_episodes(idm, ds)
    episodes = episodes[:max_episodes] if max_episodes else episodes
    preds, trues, confs = [], [], []
    moved_by_episode: dict[int, np.ndarray] = {}  # per episode [T - 1], for a game with a player locator
    has_locator = True
    for e in tqdm(episodes, desc="IDM eval", unit="episode", disable=not progress):
        frames = ds.read_frames(e, 0, ds.episode_lengths[e])
        actions = ds.read_actions(e)
        labels, conf = idm.label(frames)
        preds.append(labels[:-1])  # the last action produced no recorded frame
        trues.append(actions[:-1])
        confs.append(conf[:-1])
        moved = player_moved(frames, ds.episode_meta(e).get("game"))
        has_locator &= moved is not None
        moved_by_episode[e] = moved if moved is not None else np.zeros(len(frames) - 1, bool)
    pred, true = np.concatenate(preds), np.concatenate(trues)
    names = idm.action_names
    A = len(names)
    confusion = np.zeros((A, A), np.int64)
    np.add.at(confusion, (true, pred), 1)
    result: dict[str, Any] = {
        "idm": str(idm.path),
        "dataset": {"path": str(ds.path), "fingerprint": ds.fingerprint()},
        "held_out": how,
        "episodes": len(episodes),
        "frames": len(true),
        "top1": float(np.mean(pred == true)),
        "mean_confidence": float(np.mean(np.concatenate(confs))),
        "per_action": {n: _accuracy(pred[true == a] == a) for a, n in enumerate(names)},
        "groups": group_scores(
            pred, true, names, np.concatenate(list(moved_by_episode.values())) if has_locator else None
        ),
        "confusion": confusion.tolist(),
        "ceiling": replay_ceiling(ds, episodes, ceiling_frames, moved_by_episode if has_locator else None)
        if ceiling_frames > 0
        else None,
    }
    if result["ceiling"] is not None:  # the IDM where the emulator says the next frame shows the answer
        shown = result["ceiling"].pop("shown")
        offsets = dict(zip(episodes, np.cumsum([0, *(len(p) for p in preds[:-1])]).tolist(), strict=True))
        dirs = action_parts(names)[0]
        for key, what in (("direction", "direction_shown"), ("action", "action_shown")):
            idx = np.concatenate([offsets[e] + np.flatnonzero(m[key]) for e, m in shown.items()])
            hit = dirs[pred[idx]] == dirs[true[idx]] if key == "direction" else pred[idx] == true[idx]
            result["groups"][what] = {
                **_accuracy(hit),
                "where": f"the emulator shows the next frame could only come from the recorded {key}",
            }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "metrics.md").write_text(idm_markdown(result, names))
    plot_confusion(confusion, names, out / "confusion.png")
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def idm_markdown(r: dict[str, Any], names: Sequence[str]) -> str:
    g = r["groups"]
    lines = [
        f"# IDM evaluation: {r['idm']}",
        "",
        f"Dataset `{r['dataset']['path']}`, {r['held_out']}: {r['episodes']} episodes, {r['frames']} frames.",
        "",
        "| measure | accuracy | frames |",
        "|---|---:|---:|",
        f"| top-1 over {len(names)} actions | {_pct(r['top1'])} | {r['frames']} |",
        f"| movement direction ({g['movement_direction']['where']}) | "
        f"{_pct(g['movement_direction']['accuracy'])} | {g['movement_direction']['n']} |",
        f"| FIRE (fires or not, where the action fires) | {_pct(g['fire']['accuracy'])} | {g['fire']['n']} |",
        f"| no-op | {_pct(g['noop']['accuracy'])} | {g['noop']['n']} |",
        *(
            f"| {k.replace('_', ' ')} ({g[k]['where']}) | {_pct(g[k]['accuracy'])} | {g[k]['n']} |"
            for k in ("direction_shown", "action_shown")
            if k in g
        ),
        "",
        f"Mean confidence of the predicted action: {r['mean_confidence']:.3f}.",
    ]
    c = r.get("ceiling")
    if c:
        lines += [
            "",
            f"What the next frame shows ({c['how']}; {c['frames']} frames): top-1 {_pct(c['top1'])}, movement "
            f"direction {_pct(c['movement_direction'])}; a sticky repeat, not the recorded action, made "
            f"{100 * c['sticky_repeat_made_frame']:.1f}% of the frames.",
        ]
    lines += ["", "| action | accuracy | frames |", "|---|---:|---:|"]
    lines += [f"| {n} | {_pct(v['accuracy'])} | {v['n']} |" for n, v in r["per_action"].items()]
    return "\n".join(lines) + "\n"


def plot_confusion(confusion: np.ndarray, names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(names)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * n, 1.5 + 0.45 * n))
    ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("recorded")
    ax.set_title("IDM confusion (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Action following: the IDM on a world's own rollouts
# ---------------------------------------------------------------------------


def action_following(
    idm: Idm, frames_BLHWC: np.ndarray, generated_BHHWC: np.ndarray, actions_BL: np.ndarray, prompt: int
) -> dict[str, Any]:
    """The IDM's accuracy on the world's rollouts against the commanded actions, beside its accuracy on the real
    frames of the same windows against the recorded ones; by horizon range and by action group.

    ``frames``: the real windows [B, L] (prompt + horizon), ``generated``: the world's frames after the prompt
    [B, H], made by ``actions[:, prompt - 1 : L - 1]``. ``ratio`` = world accuracy / real accuracy.
    """
    B, L = actions_BL.shape
    H = L - prompt
    commanded = actions_BL[:, prompt - 1 : L - 1]
    ts = np.arange(prompt - 1, L - 1)  # the step whose action made frame t + 1 = prompt + h - 1
    names = idm.action_names
    world_seq = np.concatenate([frames_BLHWC[:, :prompt], generated_BHHWC], axis=1)
    hits = {}
    for name, seq in (("real", frames_BLHWC), ("world", world_seq)):
        windows = np.concatenate([idm.windows(s, ts) for s in seq])  # [B * H, F, ...]
        pred = idm.probabilities(windows).argmax(-1).reshape(B, H)
        hits[name] = (pred == commanded, pred)
    horizon = np.broadcast_to(np.arange(1, H + 1), (B, H))
    dirs, fire, noop = action_parts(names)
    groups = {"movement": dirs[commanded] != "", "fire": fire[commanded], "noop": noop[commanded]}
    out: dict[str, Any] = {
        "real_accuracy": float(hits["real"][0].mean()),
        "world_accuracy": float(hits["world"][0].mean()),
        "windows": int(B),
        "horizon": int(H),
        "by_horizon": {},
        "by_group": {},
    }
    out["ratio"] = out["world_accuracy"] / max(out["real_accuracy"], 1e-9)
    for lo, hi in HORIZON_RANGES:
        m = (horizon >= lo) & (horizon <= hi)
        if m.any():
            key = f"{lo}-{min(hi, H)}"
            out["by_horizon"][key] = {k: float(hits[k][0][m].mean()) for k in ("real", "world")}
    for gname, m in groups.items():
        if m.any():
            entry = {k: float(hits[k][0][m].mean()) for k in ("real", "world")}
            if gname == "movement":
                for k in ("real", "world"):
                    entry[f"{k}_direction"] = float((dirs[hits[k][1]] == dirs[commanded])[m].mean())
            out["by_group"][gname] = {"n": int(m.sum()), **entry}
    return out
