"""Checkpoints on disk: training checkpoints of a stage, and self-describing world folders.

A training run keeps Orbax checkpoints in ``<run>/checkpoints/<step>/`` with the
items ``params``, ``ema`` (the weights that ship), ``opt_state`` and ``data`` (used
only to resume) and ``meta`` (step, stage, config as JSON, statistics).

A world folder holds everything ``load_world`` needs and nothing else:

    world.json      format, configs, action names, fps, frame shape, latent statistics,
                    dataset fingerprint, training steps and evaluation figures
    autoencoder/    the autoencoder's EMA weights (Orbax, float32)
    dynamics/       the dynamics model's EMA weights (Orbax, float32)
    reward/         optional: the reward and episode-end model (``train/reward.py``)
    idm/            optional: an inverse-dynamics model folder (``worldplay.idm``)
    prompts.npz     held-out prompt frames uint8 [K, P, H, W, 3] and their actions int32 [K, P]

It is written to a temporary folder beside the target and renamed into place, so
a reader sees the old world or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from worldplay.errors import WorldplayError

WORLD_FORMAT = "worldplay-world"
WORLD_VERSION = 1


class CheckpointError(WorldplayError):
    """A checkpoint folder is missing, incomplete or of another kind."""


def stage_step_dir(path: str | os.PathLike[str]) -> Path:
    """A run folder, its ``checkpoints`` folder or one step folder -> the step folder (latest step)."""
    p = Path(path)
    if (p / "meta").is_dir():
        return p
    for folder in (p / "checkpoints", p):
        if folder.is_dir():
            steps = sorted(int(c.name) for c in folder.iterdir() if c.name.isdigit() and (c / "meta").is_dir())
            if steps:
                return folder / str(steps[-1])
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run folder")
    raise CheckpointError(f"{p}: no training checkpoint in it (expected checkpoints/<step>/meta); train first")


def read_stage_meta(step_dir: Path) -> dict[str, Any]:
    meta_file = step_dir / "meta" / "metadata"
    try:
        return json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{meta_file}: unreadable checkpoint metadata ({e})") from None


def restore_into(module: nnx.Module, item_dir: Path) -> nnx.Module:
    """Load the weights saved in ``item_dir`` into ``module`` (built with the same config)."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # not the mesh it was trained on
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(item_dir.absolute(), abstract)
    except Exception as e:  # Orbax and TensorStore raise many kinds; all of them mean "does not load"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{item_dir}: the weights do not load into this model ({first}); the folder may be damaged or "
            "from another model: re-export or reinstall it"
        ) from None
    return nnx.merge(graphdef, restored, rest)


def file_manifest(root: Path) -> dict[str, list[Any]]:
    """``{relative path: [size in bytes, sha256]}`` of every file under ``root`` but ``world.json``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "world.json":
            out[p.relative_to(root).as_posix()] = [p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()]
    return out


def verify_files(root: Path, manifest: dict[str, list[Any]]) -> None:
    """Refuse a world folder whose files are missing, truncated or altered since it was written."""
    for rel, (size, digest) in manifest.items():
        p = root / rel
        if not p.is_file():
            raise CheckpointError(f"{root}: {rel} is missing; the world folder is incomplete: copy or reinstall it")
        actual = p.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"{root}: {rel} is damaged ({actual:,} bytes, written with {size:,}): copy or reinstall the world, "
                "or export it again from its training run"
            )
        if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            raise CheckpointError(
                f"{root}: {rel} is damaged (its checksum differs from when it was written): copy or reinstall "
                "the world, or export it again from its training run"
            )


def save_params(module: nnx.Module, item_dir: Path) -> None:
    params = nnx.state(module, nnx.Param)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(item_dir.absolute(), params)
        ckptr.wait_until_finished()
    # Orbax's marker names the temporary folder it was written in; the folder is renamed, so drop it
    (item_dir / "commit_success.txt").unlink(missing_ok=True)


def save_world(
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    autoencoder: nnx.Module,
    dynamics: nnx.Module,
    prompt_frames: np.ndarray,
    prompt_actions: np.ndarray,
    *,
    carry: tuple[str, ...] = ("reward", "rate", "idm"),
    carry_from: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a world folder atomically (replacing an older one at ``path``).

    The optional parts named in ``carry`` of the world being replaced (or of the world ``carry_from``) are kept:
    the reward and rate models when they were made for the same autoencoder (same latent statistics), the IDM
    (it reads frames) always; so retraining or fine-tuning the dynamics does not drop them.
    """
    target = Path(path)
    source = target if carry_from is None else Path(carry_from)
    with _staged(target) as tmp:
        save_params(autoencoder, tmp / "autoencoder")
        save_params(dynamics, tmp / "dynamics")
        np.savez(tmp / "prompts.npz", frames=np.asarray(prompt_frames, np.uint8), actions=np.asarray(prompt_actions))
        meta = {**_carried_parts(source, tmp, carry, autoencoder_identity(meta)), **meta}
        _write_world_json(tmp, meta)
    return target


def _write_world_json(root: Path, meta: dict[str, Any]) -> None:
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "files")}
    files = file_manifest(root)
    (root / "world.json").write_text(
        json.dumps({"format": WORLD_FORMAT, "version": WORLD_VERSION, **meta, "files": files}, indent=2)
    )


@contextlib.contextmanager
def _staged(target: Path, copy_of: Path | None = None) -> Iterator[Path]:
    """A temporary folder beside ``target`` (a copy of ``copy_of``, or empty) to write into;
    on success it replaces ``target`` (renames, so a reader sees the old folder or the new one), on any error
    it is removed and ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        if copy_of is not None:
            tmp.rmdir()
            shutil.copytree(copy_of, tmp)
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def autoencoder_identity(meta: dict[str, Any]) -> str:
    """A short name of a world's autoencoder, from its latent statistics (they differ between any two trainings)."""
    stats = [[float(np.float32(x)) for x in meta[k]] for k in ("latent_mean", "latent_std")]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:12]


def _carried_parts(old_world: Path, new_root: Path, names: tuple[str, ...], ae_id: str) -> dict[str, Any]:
    """Copy the parts ``names`` of ``old_world`` made for autoencoder ``ae_id`` (or for none: the IDM reads frames)
    into ``new_root``; their metadata."""
    if not (old_world / "world.json").is_file():
        return {}
    try:
        old = json.loads((old_world / "world.json").read_text())
    except ValueError:
        return {}
    out = {}
    for name in names:
        part = old.get(name)
        made_for = part.get("autoencoder", {"id": ae_id}) if isinstance(part, dict) else None
        if made_for is not None and made_for.get("id") == ae_id and (old_world / name).is_dir():
            shutil.copytree(old_world / name, new_root / name)
            out[name] = part
    return out


def save_part(path: str | os.PathLike[str], kind: str, module: nnx.Module, meta: dict[str, Any]) -> Path:
    """Write one model of a world on its own, atomically: ``params/`` and ``part.json`` (kind and metadata)."""
    target = Path(path)
    with _staged(target) as tmp:
        save_params(module, tmp / "params")
        (tmp / "part.json").write_text(json.dumps({"format": "worldplay-part", "kind": kind, **meta}, indent=2))
    return target


def attach_part(world: str | os.PathLike[str], name: str, module: nnx.Module, meta: dict[str, Any]) -> Path:
    """Add (or replace) the optional part ``name`` (e.g. ``"reward"``) of a world folder, atomically: the world
    is copied, the part written into the copy with its metadata under ``name`` in world.json, and the copy
    renamed into place. The part must have been made for this world's autoencoder (``meta["autoencoder"]["id"]``)."""
    target = Path(world)
    world_meta = read_world_meta(target)
    ae_id = autoencoder_identity(world_meta)
    if meta.get("autoencoder", {}).get("id") != ae_id:
        raise CheckpointError(
            f"{target}: this {name} model was trained on the latents of another autoencoder "
            f"({meta.get('autoencoder', {}).get('id')}, the world's is {ae_id}); train it for this world: "
            f"worldplay train {name} --config C --world {target}"
        )
    return derive_world(target, target, {name: module}, {name: meta})


def derive_world(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    parts: dict[str, nnx.Module | Path],
    meta: dict[str, Any],
) -> Path:
    """Write, atomically, a copy of the world ``source`` at ``path`` (replacing an older one there) with the
    weights of ``parts`` replaced and the keys of ``meta`` set in its world.json. A part is a module to save
    (``{"autoencoder": ae}``) or the folder of that part in another world, copied as it is. Every other part
    (reward model, IDM, prompts) is copied from ``source`` as it is."""
    source, target = Path(source), Path(path)
    world_meta = read_world_meta(source)
    with _staged(target, copy_of=source) as tmp:
        for name, part in parts.items():
            shutil.rmtree(tmp / name, ignore_errors=True)
            if isinstance(part, Path):
                shutil.copytree(part, tmp / name)
            else:
                save_params(part, tmp / name)
        _write_world_json(tmp, {**world_meta, **meta})
    return target


def read_world_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    root = Path(path)
    meta_file = root / "world.json"
    if not root.exists():
        raise CheckpointError(f"{root}: no such world checkpoint")
    if not meta_file.is_file():
        hint = ""
        if (root / "checkpoints").is_dir() or (root / "meta").is_dir():
            hint = " (this is a training run; its world is written to <run>/world by `worldplay train dynamics`)"
        raise CheckpointError(f"{root}: not a world checkpoint, no world.json{hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{meta_file}: not valid JSON ({e})") from None
    if meta.get("format") != WORLD_FORMAT:
        raise CheckpointError(f"{meta_file}: not a worldplay world (format {meta.get('format')!r})")
    if meta.get("version", 0) > WORLD_VERSION:
        raise CheckpointError(
            f"{meta_file}: world format v{meta['version']} is newer than this worldplay reads "
            f"(v{WORLD_VERSION}); upgrade worldplay"
        )
    for key in ("autoencoder", "dynamics", "action_names", "latent_mean", "latent_std", "frame_shape", "fps"):
        if key not in meta:
            raise CheckpointError(f"{meta_file}: key {key!r} missing; the world folder is incomplete")
    return meta


def default_world(name: str = "boxing") -> Path:
    """The folder of a world shipped with worldplay (installed with the package, or in a source checkout)."""
    try:
        from importlib.resources import files

        candidate = Path(str(files("worldplay.worlds") / name))
    except ModuleNotFoundError:
        candidate = Path(__file__).resolve().parents[2] / "checkpoints" / name
    if not (candidate / "world.json").is_file():
        raise CheckpointError(
            f"the default world {name!r} is not installed ({candidate} has no world.json); "
            "reinstall worldplay, or pass a world folder: worldplay play runs/<name>/dynamics/world"
        )
    return candidate


def shipped_worlds() -> list[str]:
    """Names of the worlds shipped with worldplay (``checkpoints/<name>``, installed as ``worldplay.worlds``)."""
    try:
        from importlib.resources import files

        root = Path(str(files("worldplay.worlds")))
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[2] / "checkpoints"
    return sorted(p.name for p in root.iterdir() if (p / "world.json").is_file())


def resolve_world(world: str | os.PathLike[str] | None) -> Path:
    """A world given on the command line: a folder, else the name of a shipped world; None: the default world.

    A folder wins over a shipped world of the same name.
    """
    if world is None:
        return default_world()
    path = Path(world)
    if path.exists() or os.sep in str(world) or "/" in str(world):
        return path
    if str(world) in shipped_worlds():
        return default_world(str(world))
    raise CheckpointError(
        f"{world}: neither a world folder nor a shipped world (shipped: {', '.join(shipped_worlds()) or 'none'})"
    )
