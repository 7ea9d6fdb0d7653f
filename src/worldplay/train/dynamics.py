"""The dynamics stage: the block-causal diffusion transformer on cached latents, and the world it makes.

The trained autoencoder of the same run (``<runs>/<name>/autoencoder``) encodes
every frame of the dataset once; the normalised latents are cached beside the run
(``latents-<dataset fingerprint>-ae<step>.npy``, float16) and training reads
windows of them. Each frame gets its own noise level (diffusion forcing) and the
action that led to it, dropped to the null action with ``null_action_prob``; the
loss is the squared error of the predicted clean latents.

Evaluation: the loss on held-out windows at fixed noise, and rollouts of the world
itself from held-out prompts, with the recorded actions and with shuffled ones
(PSNR against the autoencoder's reconstruction of the real frames), written as
side-by-side videos. Every checkpoint also writes ``<run>/world``: a complete world
folder that ``worldplay play`` opens.

Fine-tuning (``worldplay train dynamics --world W``): the stage starts from the world
W's dynamics weights instead, on W's autoencoder and latent statistics (the run needs
no autoencoder of its own), and its world keeps W's reward and rate models.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from worldplay import diffusion
from worldplay.checkpoint import read_stage_meta, restore_into, save_world, stage_step_dir
from worldplay.compiled import hot_jit
from worldplay.config import AutoencoderConfig, Config, config_to_dict, part_from_dict
from worldplay.data.format import Dataset, open_dataset
from worldplay.errors import WorldplayError
from worldplay.metrics import image_grid
from worldplay.models.autoencoder import Autoencoder
from worldplay.models.dynamics import Dynamics
from worldplay.world import WorldModel

PROMPT_FRAMES = 4  # frames of context a rollout starts from (prompts in the world folder too)
EVAL_HORIZONS = (1, 4, 8)  # frames after the prompt at which the in-training evaluation scores rollouts
EVAL_STREAMS = 32  # held-out windows rolled out at each evaluation


def load_autoencoder(run_path: str | os.PathLike[str]) -> tuple[Autoencoder, dict[str, Any]]:
    """The EMA autoencoder of a training run (its latest checkpoint) and that checkpoint's metadata."""
    step_dir = stage_step_dir(run_path)
    meta = read_stage_meta(step_dir)
    if meta.get("stage") != "autoencoder":
        raise WorldplayError(f"{step_dir}: a {meta.get('stage')!r} checkpoint, not an autoencoder")
    if "latent_mean" not in meta:
        raise WorldplayError(f"{step_dir}: no latent statistics stored; rerun `worldplay train autoencoder`")
    cfg = part_from_dict(AutoencoderConfig, meta["config"]["autoencoder"], "autoencoder")
    model = nnx.eval_shape(lambda: Autoencoder(cfg, rngs=nnx.Rngs(0)))
    return restore_into(model, step_dir / "ema"), meta


def world_autoencoder(world: str | os.PathLike[str]) -> tuple[Autoencoder, dict[str, Any]]:
    """A world folder's autoencoder, restored, and the world's metadata (world.json)."""
    from worldplay.checkpoint import read_world_meta

    meta = read_world_meta(world)
    cfg = part_from_dict(AutoencoderConfig, meta["autoencoder"], "autoencoder")
    model = nnx.eval_shape(lambda: Autoencoder(cfg, rngs=nnx.Rngs(0)))
    return restore_into(model, Path(world) / "autoencoder"), meta


def encode_dataset(
    ae: Autoencoder, stats: np.ndarray, ds: Dataset, out: Path, *, batch: int = 256, progress: bool = True
) -> np.ndarray:
    """Normalised latents of every frame of ``ds`` (episodes in order), cached at ``out`` (float16 .npy)."""
    h = ae.config.latent_shape
    if out.is_file():
        cached = np.load(out, mmap_mode="r")
        if cached.shape == (ds.num_frames, *h):
            return cached
    graphdef, params = nnx.split(ae)
    mean, std = jnp.asarray(stats[0]), jnp.asarray(stats[1])

    @hot_jit  # every frame of the dataset
    def enc(p, frames):
        return ((nnx.merge(graphdef, p).encode(frames) - mean) / std).astype(jnp.float16)

    tmp = out.with_suffix(f".tmp-{os.getpid()}.npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(ds.num_frames, *h))
    row = 0
    bar = tqdm(total=ds.num_frames, disable=not progress, desc="encode latents", unit="frame")
    try:
        for i, n in enumerate(ds.episode_lengths):
            for s in range(0, n, batch):
                frames = ds.read_frames(i, s, min(batch, n - s))
                padded = np.zeros((batch, *frames.shape[1:]), np.uint8)  # one shape: one compile
                padded[: len(frames)] = frames
                arr[row : row + len(frames)] = np.asarray(enc(params, padded))[: len(frames)]
                row += len(frames)
                bar.update(len(frames))
        arr.flush()
        del arr
        os.replace(tmp, out)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return np.load(out, mmap_mode="r")


def latent_cache(cfg: Config, ds: Dataset, ae_meta: dict[str, Any]) -> Path:
    """Where the run's latents of ``ds`` by its autoencoder (at the step of ``ae_meta``) are cached (shared by the
    dynamics and reward stages)."""
    from worldplay.train.loop import run_dir

    return run_dir(cfg, "dynamics") / f"latents-{ds.fingerprint()}-ae{ae_meta['step']}.npy"


def run_latents(
    cfg: Config, ds: Dataset, stage_name: str, *, progress: bool = True
) -> tuple[Autoencoder, dict[str, Any], np.ndarray]:
    """The run's autoencoder, its checkpoint metadata, and the normalised latents of ``ds`` by it (cached), for a
    stage that trains on latents; a run without an autoencoder yet is refused, naming ``stage_name``."""
    from worldplay.train.loop import run_dir

    try:
        ae, ae_meta = load_autoencoder(run_dir(cfg, "autoencoder"))
    except WorldplayError as e:
        raise WorldplayError(
            f"{e}\n  the {stage_name} stage needs this run's autoencoder first: "
            "worldplay train autoencoder --config <this config>"
        ) from None
    stats = np.stack([ae_meta["latent_mean"], ae_meta["latent_std"]]).astype(np.float32)
    return ae, ae_meta, encode_dataset(ae, stats, ds, latent_cache(cfg, ds, ae_meta), progress=progress)


def latent_background(latents: np.ndarray, ds: Dataset, episodes: list[int], frames: int = 4096) -> np.ndarray:
    """The latent of a game's empty screen [h, w, C]: per position, the median of up to ``frames`` latents spread
    evenly over ``episodes`` (rows of ``latents`` follow the dataset's frames, episodes in order). Sprites move
    about and cover each position in few frames, so the median is what lies behind them."""
    starts = np.concatenate([[0], np.cumsum(ds.episode_lengths)])
    rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in episodes])
    rows = rows[np.linspace(0, len(rows) - 1, min(frames, len(rows))).astype(int)]
    return np.median(np.asarray(latents[rows], np.float32), axis=0)


def rollout(
    world: WorldModel, prompt_z: jax.Array, prompt_actions: np.ndarray, actions: np.ndarray, *, seed: int = 0
) -> np.ndarray:
    """Latents generated from normalised prompt latents [B, P, ...] by actions [B, H] -> [B, H, h, w, C]."""
    state = world.start_latents(prompt_z, prompt_actions, seed=seed)
    out = []
    for k in range(actions.shape[1]):
        state, _, z = world.step_latent(state, actions[:, k])
        out.append(np.asarray(z))
    return np.stack(out, axis=1)


class DynamicsObjective:
    """The training objective of the dynamics model (diffusion forcing, x0-prediction, action dropout).

    On its own (no dataset) it builds a model for ``num_actions`` actions and makes synthetic batches:
    what ``bench train`` and the projected schedule time.
    """

    name = "dynamics"

    def __init__(
        self,
        cfg: Config,
        num_actions: int = 18,
        background: np.ndarray | None = None,
        init: Path | None = None,
    ):
        self.cfg = cfg
        self.num_actions = num_actions
        # the latent of the game's empty screen [h, w, C], for ``dynamics.sprite_weight`` (zeros when not given)
        self.background = np.zeros(cfg.autoencoder.latent_shape, np.float32) if background is None else background
        self.init = init  # a world folder whose dynamics weights training starts from (fine-tuning), or None

    def build(self, rngs: nnx.Rngs) -> Dynamics:
        model = Dynamics(self.cfg.dynamics, self.cfg.autoencoder.latent_shape, self.num_actions, rngs=rngs)
        return model if self.init is None else restore_into(model, self.init / "dynamics")

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        shape = (batch_size, self.cfg.dynamics.window)
        return {
            "latents": rng.normal(size=(*shape, *self.cfg.autoencoder.latent_shape)).astype(np.float16),
            "actions": rng.integers(0, self.num_actions, shape).astype(np.int32),
        }

    def batch(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"latents": raw["latents"], "actions": raw["actions"].astype(np.int32)}

    def loss(self, model: Dynamics, batch: dict[str, jax.Array], key: jax.Array):
        dc = self.cfg.dynamics
        z = batch["latents"].astype(jnp.float32)  # [B, T, h, w, C]
        k_t, k_eps, k_drop = jax.random.split(key, 3)
        t = diffusion.sample_levels(k_t, z.shape[:2], dc.context_noise, dc.clean_context_prob, dc.noise_level_power)
        recorded = diffusion.previous_actions(batch["actions"], model.null_action)
        prev = diffusion.drop_actions(k_drop, recorded, model.null_action, dc.null_action_prob)
        inputs = z  # what the frames are noised from; the targets stay the recorded latents
        if dc.own_context_prob:
            denoise = lambda z_t, t_: model(z_t, t_, recorded)  # noqa: E731
            own_key = jax.random.fold_in(key, 3)  # the other keys as without it: configs without it train as before
            inputs = diffusion.own_context(denoise, z, own_key, dc.own_context_prob, dc.context_noise_at_sampling)
        z_t = diffusion.add_noise(inputs, jax.random.normal(k_eps, z.shape), t[..., None, None, None])
        sq_err = (model(z_t, t, prev) - z) ** 2  # [B, T, h, w, C]
        if dc.motion_weight or dc.sprite_weight:
            weights = diffusion.motion_weights(z, dc.motion_weight, self.background, dc.sprite_weight)  # [B, T, h, w]
            err = jnp.mean(jnp.mean(sq_err, axis=-1) * weights, axis=(2, 3))  # [B, T]
        else:  # the unweighted mean, computed as before weights existed
            err = jnp.mean(sq_err, axis=(2, 3, 4))
        high = t > 0.5
        return jnp.mean(err), {
            "mse_high_noise": jnp.sum(err * high) / jnp.maximum(high.sum(), 1),
        }


class DynamicsStage(DynamicsObjective):
    def __init__(
        self,
        cfg: Config,
        ae: Autoencoder,
        ae_meta: dict[str, Any],
        ds: Dataset,
        prompts: dict[str, Any],
        background: np.ndarray | None = None,
        init: dict[str, Any] | None = None,
    ):
        super().__init__(cfg, len(ds.action_names), background, None if init is None else Path(init["path"]))
        self.init_meta = init  # the world fine-tuned from: its folder, name and steps (recorded in the export)
        self.ae = ae
        self.ae_meta = ae_meta
        self.ds = ds
        self.stats = np.stack([ae_meta["latent_mean"], ae_meta["latent_std"]]).astype(np.float32)
        self.prompts = prompts  # frames [K, P, H, W, 3] and actions [K, P] from held-out episodes
        self.last_eval: dict[str, float] = {}
        self._eval_loss = jax.jit(lambda m, b, k: self.loss(m, b, k)[0])  # compiled once, reused every evaluation

    def _world(self, model: Dynamics) -> WorldModel:
        return WorldModel(
            self.ae,
            model,
            latent_mean=self.stats[0],
            latent_std=self.stats[1],
            action_names=self.ds.action_names,
            fps=self.ds.fps,
        )

    def evaluate(self, model: Dynamics, batches: list[dict[str, np.ndarray]]):
        """Held-out loss at fixed noise, and the cheap rollout scores of :func:`rollout_metrics`."""
        W = self.cfg.dynamics.window
        key = jax.random.key(1234)  # fixed: the same noise at every evaluation
        losses, shuffled_losses = [], []
        for i, b in enumerate(batches):
            inputs = self.batch(_first(b, W))
            losses.append(float(self._eval_loss(model, inputs, jax.random.fold_in(key, i))))
            shuffled = np.random.default_rng(i).permutation(inputs["actions"].reshape(-1))
            inputs = {**inputs, "actions": shuffled.reshape(inputs["actions"].shape)}
            shuffled_losses.append(float(self._eval_loss(model, inputs, jax.random.fold_in(key, i))))
        # the same noise with the actions shuffled: how much of the loss the actions explain
        result = {
            "eval_loss": float(np.mean(losses)),
            "action_loss_gain": float(np.mean(shuffled_losses) / np.mean(losses) - 1),
        }
        z = np.concatenate([b["latents"] for b in batches])[:EVAL_STREAMS]
        acts = np.concatenate([b["actions"] for b in batches])[:EVAL_STREAMS]
        scores, real, fake = rollout_metrics(self._world(model), z, acts)
        result.update(scores)
        self.last_eval = result
        self._samples = (real[:4], fake[:4])
        rows = [real[0, :8], fake[0, :8]]
        return result, {"rollout": image_grid(rows)}

    def samples_video(self, path: Path) -> None:
        from worldplay.video import write_video

        real, fake = self._samples  # [n, H, h, w, 3]
        frames = np.concatenate([np.concatenate([r, f], axis=2) for r, f in zip(real, fake, strict=True)], axis=1)
        write_video(path, frames, fps=self.ds.fps, scale=4)  # streams stacked; real left, world right

    def extras(self, model: Dynamics) -> dict[str, Any]:
        start = None if self.init_meta is None else self.init_meta["path"]
        return {
            "autoencoder_step": self.ae_meta["step"],
            "action_names": list(self.ds.action_names),
            "fine_tuned_from": start,
        }

    def export(self, model: Dynamics, step: int, run_root: Path) -> None:
        """Write the world folder of this checkpoint, and a sample video."""
        meta = {
            "name": self.cfg.name,
            "autoencoder": config_to_dict(self.ae.config),
            "dynamics": config_to_dict(self.cfg.dynamics),
            "action_names": list(self.ds.action_names),
            "fps": self.ds.fps,
            "frame_shape": list(self.ds.frame_shape),
            "latent_mean": self.stats[0].tolist(),
            "latent_std": self.stats[1].tolist(),
            "dataset": {"path": str(self.ds.path), "fingerprint": self.ds.fingerprint()},
            "data": {"holdout": self.cfg.data.holdout, "seed": self.cfg.data.seed},  # which episodes it never saw
            "steps": {"autoencoder": self.ae_meta["step"], "dynamics": step},
            "eval": self.last_eval,
        }
        if self.init_meta is not None:  # the steps above count from the world it started from
            meta["fine_tuned_from"] = self.init_meta
        world = run_root / "world"
        # a fine-tuned world's first export takes the reward and rate models of the world it started from
        first = self.init is not None and not (world / "world.json").is_file()
        save_world(
            world,
            meta,
            self.ae,
            model,
            self.prompts["frames"],
            self.prompts["actions"],
            carry_from=self.init if first else None,
        )
        if getattr(self, "_samples", None) is not None:
            path = run_root / "samples" / f"rollout-{step:07d}.mp4"
            try:
                self.samples_video(path)
            except (ImportError, OSError) as e:  # a video that cannot be written must not stop a training run
                warnings.warn(f"{path}: sample video not written ({e})", stacklevel=1)


def rollout_metrics(
    world: WorldModel, z: np.ndarray, actions: np.ndarray
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Cheap rollout scores of a world from held-out windows of normalised latents [n, T, h, w, C].

    Each window starts from ``PROMPT_FRAMES`` real latents; the world is driven by the recorded actions and
    by the same actions shuffled, and repeating the last prompt frame is the baseline. PSNR is against the
    autoencoder's reconstruction of the real frames, pooled over the windows, at the ``EVAL_HORIZONS``:
    ``psnr_h*``, ``delta_psnr_h*`` (recorded minus shuffled actions: do the keys matter) and
    ``margin_repeat_h*`` (world minus repeat-last: does it predict what moves). Returns the scores and the
    real and generated frames, uint8 [n, T - P, H, W, 3].
    """
    z = jnp.asarray(z, jnp.float32)
    acts = np.asarray(actions, np.int32)
    P, T = PROMPT_FRAMES, z.shape[1]
    true_acts = acts[:, P - 1 : T - 1]
    shuffled = np.random.default_rng(0).permutation(true_acts.reshape(-1)).reshape(true_acts.shape)

    def frames(latents: Any) -> np.ndarray:  # [n, H', ...] -> uint8 [n, H', h, w, 3]
        lead = latents.shape[:2]
        return world.decode(jnp.reshape(latents, (-1, *latents.shape[2:]))).reshape(*lead, *world.frame_shape)

    real = frames(z[:, P:])
    fake = frames(rollout(world, z[:, :P], acts, true_acts))
    fake_shuffled = frames(rollout(world, z[:, :P], acts, shuffled))
    repeat = np.broadcast_to(frames(z[:, P - 1 : P]), real.shape)

    def pooled_psnr(pred: np.ndarray) -> np.ndarray:  # [H]: PSNR of the mean squared error over windows
        mse = np.mean((real.astype(np.float32) - pred.astype(np.float32)) ** 2, axis=(0, 2, 3, 4))
        return 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10))

    p_true, p_shuf, p_rep = pooled_psnr(fake), pooled_psnr(fake_shuffled), pooled_psnr(repeat)
    scores = {}
    for h in EVAL_HORIZONS:
        if h <= T - P:
            scores[f"psnr_h{h}"] = float(p_true[h - 1])
            scores[f"delta_psnr_h{h}"] = float(p_true[h - 1] - p_shuf[h - 1])
            scores[f"margin_repeat_h{h}"] = float(p_true[h - 1] - p_rep[h - 1])
    return scores, real, fake


def eval_window(cfg: Config) -> int:
    """Frames in a held-out window of the in-training evaluation: the training window, or a prompt and the
    longest horizon."""
    return max(cfg.dynamics.window, PROMPT_FRAMES + max(EVAL_HORIZONS))


def _first(batch: dict[str, np.ndarray], frames: int) -> dict[str, np.ndarray]:
    """The first ``frames`` frames of every window of a batch."""
    return {k: v[:, :frames] for k, v in batch.items()}


def held_out_prompts(ds: Dataset, episodes: list[int], count: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` prompts of PROMPT_FRAMES real frames (and their actions) from held-out episodes."""
    rng = np.random.default_rng(seed)
    frames, actions = [], []
    usable = [e for e in episodes if ds.episode_lengths[e] > PROMPT_FRAMES]
    if not usable:
        raise WorldplayError(f"{ds.path}: no held-out episode longer than {PROMPT_FRAMES} frames for prompts")
    for k in range(count):
        e = usable[k % len(usable)]
        start = int(rng.integers(0, ds.episode_lengths[e] - PROMPT_FRAMES))
        f, a = ds.read_window(e, start, PROMPT_FRAMES)
        frames.append(f)
        actions.append(a)
    return {"frames": np.stack(frames), "actions": np.stack(actions).astype(np.int32)}


ARCHITECTURE_KEYS = ("patch", "width", "depth", "heads", "mlp_ratio", "window")  # the dynamics keys of its weights


def world_start(
    cfg: Config, ds: Dataset, world: Path, *, progress: bool = True
) -> tuple[Autoencoder, dict[str, Any], np.ndarray, dict[str, Any]]:
    """What the dynamics stage needs to fine-tune the world folder ``world`` on ``cfg``'s dataset: its autoencoder,
    that autoencoder's metadata as the stage reads it, the dataset's latents by it (cached beside the run), and the
    record of the start that the exported world keeps. A world whose model the config does not describe, or whose
    keys are not the dataset's, is refused, naming the setting to change."""
    from worldplay.checkpoint import autoencoder_identity
    from worldplay.train.loop import run_dir
    from worldplay.train.reward import encode_cached

    ae, meta = world_autoencoder(world)
    wanted = {
        **{f"autoencoder.{k}": v for k, v in meta["autoencoder"].items() if hasattr(cfg.autoencoder, k)},
        **{f"dynamics.{k}": meta["dynamics"][k] for k in ARCHITECTURE_KEYS},
    }
    for key, value in wanted.items():
        section, name = key.split(".")
        ours = getattr(getattr(cfg, section), name)
        if json.loads(json.dumps(ours)) != value:
            raise WorldplayError(
                f"{world}: its {key} is {json.dumps(value)}, the config says {json.dumps(ours)}; fine-tuning keeps "
                f"the world's model: add --set {key}={json.dumps(value)}"
            )
    if list(meta["action_names"]) != list(ds.action_names):
        raise WorldplayError(
            f"{ds.path}: its actions {list(ds.action_names)} are not those of {world} ({meta['action_names']}); "
            "fine-tune on a dataset of the same game and action set"
        )
    ae_meta = {
        "step": meta["steps"]["autoencoder"],
        "latent_mean": meta["latent_mean"],
        "latent_std": meta["latent_std"],
    }
    stats = np.stack([meta["latent_mean"], meta["latent_std"]]).astype(np.float32)
    latents = encode_cached(ae, stats, ds, run_dir(cfg, "dynamics"), autoencoder_identity(meta), progress)
    start = {"path": str(world), "name": meta.get("name"), "steps": meta["steps"], "dataset": meta.get("dataset")}
    return ae, ae_meta, latents, start


def check_same_start(root: Path, world: Path | None) -> None:
    """Refuse to resume the dynamics run at ``root`` from another start than its checkpoints had: a run fine-tuned
    from a world resumes only with that ``--world`` (the same folder, however the path is written), and a run from
    scratch only without one (the checkpoints' weights on other latents would train on silently)."""
    try:
        meta = read_stage_meta(stage_step_dir(root))
    except WorldplayError:  # no checkpoint yet: any start
        return
    was, now = meta.get("fine_tuned_from"), None if world is None else str(world)
    resolved = [None if p is None else Path(p).resolve() for p in (was, now)]
    if resolved[0] != resolved[1]:
        said = f"fine-tuned from {was} (--world {was})" if was else "trained from scratch (no --world)"
        raise WorldplayError(
            f"{root}: its checkpoints were {said}; resume it that way, or train under another `name` "
            f"(--set name=...) to {'fine-tune ' + now if now else 'train from scratch'}"
        )


def train_dynamics(
    cfg: Config, *, world: Path | None = None, progress: bool = True, later_s: float | None = None
) -> dict[str, Any]:
    """Train (or resume) the dynamics model of ``cfg`` on latents of its run's autoencoder.

    ``world``: fine-tune this world folder instead: start from its dynamics weights, on its autoencoder's latents
    of the config's dataset (the run needs no autoencoder of its own). ``later_s``: projected seconds of the
    stages after this one (for the progress bar's ETA).
    """
    from worldplay.data.loader import split_episodes
    from worldplay.train.loop import loaders, preflight, run_dir, train

    preflight(cfg, "dynamics")
    check_same_start(run_dir(cfg, "dynamics"), world)
    ds = open_dataset(cfg.data.dataset)
    start = None
    if world is None:
        ae, ae_meta, latents = run_latents(cfg, ds, "dynamics", progress=progress)
    else:
        ae, ae_meta, latents, start = world_start(cfg, ds, Path(world), progress=progress)
    root = run_dir(cfg, "dynamics")
    train_eps, held = split_episodes(ds, cfg.data.holdout, cfg.data.seed)
    train_iter, eval_batches = loaders(
        cfg, "dynamics", cfg.dynamics.window, eval_window=eval_window(cfg), dataset=ds, latents=latents
    )
    background = latent_background(latents, ds, train_eps) if cfg.dynamics.sprite_weight else None
    stage = DynamicsStage(cfg, ae, ae_meta, ds, held_out_prompts(ds, held, seed=cfg.data.seed), background, start)
    result = train(stage, cfg, train_iter, eval_batches, progress=progress, later_s=later_s)
    result["world"] = str(root / "world")
    return result
