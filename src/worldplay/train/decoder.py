"""The decoder stage: the autoencoder's decoder fine-tuned on the latents the world generates.

A world shows frames decoded from latents that its dynamics model made, not from latents its encoder made,
and a decoder trained on the encoder's alone draws the world's a little off. After the dynamics (and reward)
stage, this stage fine-tunes the decoder alone: the encoder, the latent statistics, the dynamics model and the
reward model stay as they are. Each batch holds training frames; a share of them (``decoder.predicted_share``)
is decoded from the world's one-step prediction of the frame (``WorldModel.one_step_latents``: sampled by the
world's own sampler from the real frames before it and the recorded action), the rest from the frame's
encoded latents. Target: the real frame; loss L1 + MSE as in the autoencoder stage.

The predictions of the first ``decoder.episodes`` training episodes are made once (one world step per frame,
the episodes as parallel streams) and cached in the run folder, keyed by the world's weights and sampler and
the episodes, so a resumed run does not make them again.

Evaluation on held-out frames (each with a full window of real frames before it): ``psnr_encoded``, the
decoder on the encoder's latents (reconstruction), and ``psnr_h1``, on the world's one-step prediction (what
the world shows one step ahead). ``eval_loss`` mixes the two losses by the share.

Every checkpoint writes ``<run>/world``: the source world (the run's ``dynamics/world``, or a folder given
with ``world=``) with the new decoder; its other parts (reward model, IDM, prompts) are copied as they are.
A rerun keeps that world true to its source (:func:`sync_with_source`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay.config import Config, config_to_dict
from worldplay.data.format import Dataset
from worldplay.errors import WorldplayError
from worldplay.evaluate import encode_frames, one_step_predictions
from worldplay.metrics import image_grid, psnr
from worldplay.models.autoencoder import Autoencoder, Decoder, frames_to_unit, unit_to_frames
from worldplay.train.autoencoder import _reconstruction_loss
from worldplay.train.dynamics import world_autoencoder


class DecoderStage:
    """The decoder's objective on the shared loop (see the module docstring).

    Without ``source`` (a world folder) it builds a fresh decoder of ``cfg.autoencoder`` and unit latent
    statistics: enough to time a step (``train world``'s projection).
    """

    name = "decoder"

    def __init__(self, cfg: Config, source: Path | None = None):
        self.cfg = cfg
        self.source = source
        self.ae: Autoencoder | None = None
        self.world_meta: dict[str, Any] = {}
        C = cfg.autoencoder.latent_channels
        self.stats = np.stack([np.zeros(C), np.ones(C)]).astype(np.float32)
        self.latent_shape = cfg.autoencoder.latent_shape
        self.frame_size = cfg.autoencoder.frame_size
        if source is not None:
            self.ae, self.world_meta = world_autoencoder(source)
            self.stats = np.stack([self.world_meta["latent_mean"], self.world_meta["latent_std"]]).astype(np.float32)
            self.latent_shape = self.ae.config.latent_shape
            self.frame_size = self.ae.config.frame_size
        self.last_eval: dict[str, float] = {}
        self._decode = jax.jit(lambda p, g, z: unit_to_frames(nnx.merge(g, p)(z * self.stats[1] + self.stats[0])))

    def build(self, rngs: nnx.Rngs) -> Decoder:
        if self.source is None:
            return Decoder(self.cfg.autoencoder, rngs=rngs)
        return world_autoencoder(self.source)[0].decoder  # a fresh copy: the stage's own stays the export's

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        s = self.frame_size
        return {
            "frames": rng.integers(0, 256, (batch_size, s, s, 3), dtype=np.uint8),
            "latents": rng.normal(size=(batch_size, *self.latent_shape)).astype(np.float16),
            "predicted": rng.normal(size=(batch_size, *self.latent_shape)).astype(np.float16),
        }

    def batch(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return raw

    def loss(self, model: Decoder, batch: dict[str, jax.Array], key: jax.Array):
        B = batch["frames"].shape[0]
        predicted = jax.random.uniform(key, (B, 1, 1, 1)) < self.cfg.decoder.predicted_share
        z = jnp.where(predicted, batch["predicted"], batch["latents"]).astype(jnp.float32)
        stats = jnp.asarray(self.stats)
        l1, mse = _reconstruction_loss(model(z * stats[1] + stats[0]), frames_to_unit(batch["frames"]))
        return l1 + mse, {"l1": l1, "mse": mse}

    def evaluate(self, model: Decoder, batches: list[dict[str, np.ndarray]]):
        graphdef, params = nnx.split(model)
        frames = np.concatenate([b["frames"] for b in batches])
        out: dict[str, float] = {}
        decoded: dict[str, np.ndarray] = {}
        eval_loss = 0.0
        share = {"predicted": self.cfg.decoder.predicted_share, "latents": 1.0 - self.cfg.decoder.predicted_share}
        for key, name in (("latents", "encoded"), ("predicted", "h1")):
            z = np.concatenate([b[key] for b in batches]).astype(np.float32)
            decoded[key] = np.asarray(self._decode(params, graphdef, jnp.asarray(z)))
            out[f"psnr_{name}"] = float(np.mean(np.asarray(psnr(frames, decoded[key]))))
            l1, mse = _reconstruction_loss(
                frames_to_unit(jnp.asarray(decoded[key])), frames_to_unit(jnp.asarray(frames))
            )
            eval_loss += share[key] * float(l1 + mse)
        out = {"eval_loss": eval_loss, **out}
        self.last_eval = out
        n = min(8, len(frames))
        return out, {"decoded": image_grid([frames[:n], decoded["latents"][:n], decoded["predicted"][:n]])}

    def extras(self, model: Decoder) -> dict[str, Any]:
        return {"source_world": None if self.source is None else str(self.source)}

    def export(self, model: Decoder, step: int, run_root: Path) -> None:
        """Write ``<run>/world``: the source world with this decoder."""
        from worldplay.checkpoint import derive_world

        if self.source is None or self.ae is None:
            return
        nnx.update(self.ae.decoder, nnx.state(model))
        steps = {**self.world_meta.get("steps", {}), "decoder": step}
        part = {"config": config_to_dict(self.cfg.decoder), "source": str(self.source), "eval": self.last_eval}
        derive_world(self.source, run_root / "world", {"autoencoder": self.ae}, {"steps": steps, "decoder": part})


class FrameSource:
    """A random-access source over in-memory rows: element ``i`` is ``{key: array[i]}`` for every array."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self._n = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[int(i)] for k, v in self.arrays.items()}


def _files(world_meta: dict[str, Any], parts: tuple[str, ...], *, keep: bool = True) -> dict[str, Any]:
    """The world's file manifest entries (size, hash) of ``parts`` (or of all but them, ``keep=False``)."""
    return {k: v for k, v in world_meta.get("files", {}).items() if (k.split("/")[0] in parts) == keep}


def _predictions_key(world_meta: dict[str, Any], ds: Dataset, episodes: list[int]) -> str:
    """What the cached predictions depend on: the world's weights and sampler, the dataset and the episodes."""
    files = _files(world_meta, ("autoencoder", "dynamics"))
    key = {"files": files, "dynamics": world_meta["dynamics"], "data": ds.fingerprint(), "episodes": episodes}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def sync_with_source(source: Path, root: Path) -> None:
    """Keep a decoder run true to its source world when that world changed after the run began.

    A decoder fine-tuned for other dynamics (the dynamics stage trained further, or retrained) is refused, in
    one line saying what to delete. When only the source's other parts changed (a reward model trained again,
    an IDM attached), ``<root>/world`` is written again with them and the fine-tuned decoder.
    """
    from worldplay.checkpoint import derive_world, read_world_meta

    target = root / "world"
    if not (target / "world.json").is_file():
        return
    new, old = read_world_meta(source), read_world_meta(target)
    if _files(new, ("dynamics",)) != _files(old, ("dynamics",)) or new["latent_mean"] != old["latent_mean"]:
        raise WorldplayError(
            f"{root}: its decoder was fine-tuned for an earlier dynamics model than {source} holds now; "
            f"delete {root} to fine-tune the decoder for the new one"
        )
    if _files(new, ("autoencoder",), keep=False) != _files(old, ("autoencoder",), keep=False):
        meta = {"steps": {**new.get("steps", {}), "decoder": old["steps"]["decoder"]}, "decoder": old["decoder"]}
        # the fine-tuned autoencoder is copied from the old world before the new one replaces it
        derive_world(source, target, {"autoencoder": target / "autoencoder"}, meta)


def training_frames(
    world: Any, ds: Dataset, episodes: list[int], cache_dir: Path, *, progress: bool = True
) -> dict[str, np.ndarray]:
    """Frames of ``episodes`` (the first of each left out: the world predicts it from nothing) with their
    encoded latents and the world's one-step predictions, as float16 normalised latents. The latents and
    predictions are cached in ``cache_dir`` (written atomically)."""
    frames = [ds.read_frames(e, 0, ds.episode_lengths[e]) for e in episodes]
    cache = cache_dir / f"predictions-{_predictions_key(world.meta, ds, episodes)}.npz"
    if cache.is_file():
        with np.load(cache) as c:
            latents, predicted = c["latents"], c["predicted"]
    else:
        z = [encode_frames(world, f) for f in frames]
        pred = one_step_predictions(world, z, [ds.read_actions(e) for e in episodes], progress=progress)
        latents = np.concatenate([x[1:] for x in z]).astype(np.float16)
        predicted = np.concatenate([p[1:] for p in pred]).astype(np.float16)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.tmp-{os.getpid()}.npz")
        np.savez(tmp, latents=latents, predicted=predicted)
        os.replace(tmp, cache)
    return {"frames": np.concatenate([f[1:] for f in frames]), "latents": latents, "predicted": predicted}


def held_out_frames(world: Any, ds: Dataset, episodes: list[int], count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` frames of ``episodes``, each with at least a full window of real frames before it, with their
    encoded latents and the world's one-step prediction of each from that window and the recorded action."""
    W = world.config.window
    usable = [e for e in episodes if ds.episode_lengths[e] > W]
    if not usable:
        raise WorldplayError(
            f"{ds.path}: no held-out episode longer than {W} frames to evaluate the decoder on; "
            "record longer episodes or raise data.holdout"
        )
    rng = np.random.default_rng(seed)
    picks = [(e, int(rng.integers(W, ds.episode_lengths[e]))) for e in rng.choice(usable, count)]
    windows = np.stack([ds.read_frames(e, t - W, W + 1) for e, t in picks])  # [n, W + 1, H, W, 3]
    actions = np.stack([ds.read_actions(e)[t - W : t + 1] for e, t in picks])
    z = encode_frames(world, windows.reshape(-1, *windows.shape[2:]))
    z = z.reshape(count, W + 1, *z.shape[1:])
    pred = world.one_step_latents(z, actions, seed=seed)
    return {
        "frames": windows[:, -1],
        "latents": z[:, -1].astype(np.float16),
        "predicted": pred[:, -1].astype(np.float16),
    }


def train_decoder(
    cfg: Config, *, world: str | Path | None = None, progress: bool = True, later_s: float | None = None
) -> dict[str, Any]:
    """Fine-tune the decoder of a world (the run's ``dynamics/world``, or ``world``) and write
    ``<runs>/<name>/decoder/world`` (see the module docstring)."""
    from worldplay.data.format import open_dataset
    from worldplay.data.loader import batched, split_episodes
    from worldplay.train.loop import preflight, run_dir, stage_train_config, train
    from worldplay.world import load_world

    preflight(cfg, "decoder")
    source = Path(world) if world is not None else run_dir(cfg, "dynamics") / "world"
    if not (source / "world.json").is_file():
        raise WorldplayError(
            f"{source}: no world to fine-tune the decoder of; train the dynamics stage first "
            "(worldplay train dynamics --config C), or give one with --world"
        )
    ds = open_dataset(cfg.data.dataset)
    w = load_world(source)
    if tuple(w.action_names) != tuple(ds.action_names):
        raise WorldplayError(
            f"{ds.path}: its actions ({', '.join(ds.action_names)}) are not the world's "
            f"({', '.join(w.action_names)}); fine-tune a world on the dataset it was trained on"
        )
    tc = stage_train_config(cfg, "decoder")
    train_eps, held = split_episodes(ds, cfg.data.holdout, cfg.data.seed)
    root = run_dir(cfg, "decoder")
    sync_with_source(source, root)
    data = training_frames(w, ds, train_eps[: cfg.decoder.episodes], root, progress=progress)
    evaluation = held_out_frames(w, ds, held or train_eps[-1:], tc.eval_batches * tc.batch_size, cfg.data.seed)
    eval_batches = [
        {k: v[i * tc.batch_size : (i + 1) * tc.batch_size] for k, v in evaluation.items()}
        for i in range(tc.eval_batches)
    ]
    del w
    train_iter = iter(
        batched(
            FrameSource(data), batch_size=tc.batch_size // jax.process_count(), seed=cfg.data.seed,
            num_threads=cfg.data.num_threads,
        )
    )  # fmt: skip
    result = train(DecoderStage(cfg, source), cfg, train_iter, lambda: eval_batches, progress=progress, later_s=later_s)
    result["world"] = str(root / "world")
    return result
