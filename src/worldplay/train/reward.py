"""The reward stage: the reward and episode-end model (``models/reward.py``) on cached latents.

Each training element is a window of ``reward.frames`` frames of one episode: the model reads their
latents and the action that produced the newest frame (with ``reward.lag`` L: the frame L before the
newest), and learns that action's recorded reward (a class per sign) and whether the newest frame is
the episode's last. Rewards are sparse (about 2.6%
of Boxing's frames), so the cross-entropy weighs each class by ``(1 / frequency) ** reward.balance``,
measured on the training episodes; the end logit likewise. Latents are noised at a random level up
to ``reward.augment_noise``, because in a world the model reads generated frames, not encoded ones.

The latents come from the autoencoder of the same run (the cache the dynamics stage wrote, shared)
or, with ``world=``, from a world folder's own autoencoder: that is how a reward model is added to
a world trained earlier. Every checkpoint writes ``<run>/model`` (the model alone) and adds it to
the world folders it was made for (the run's ``<runs>/<name>/dynamics/world`` and, once the decoder stage
has made it, ``<runs>/<name>/decoder/world``; or the given world).

Evaluation on held-out windows: precision, recall and F1 of each reward sign and the end flag.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay import diffusion
from worldplay.config import Config, config_to_dict
from worldplay.data.format import Dataset, open_dataset
from worldplay.errors import WorldplayError
from worldplay.evaluate import matched_events
from worldplay.models.reward import NEG, POS, RewardModel, refractory_steps, reward_class


def class_weights(counts: np.ndarray, balance: float) -> np.ndarray:
    """Weights ``(1 / frequency) ** balance`` for classes with ``counts``, scaled to a mean weight of 1 per
    example (an absent class gets the largest weight of the others)."""
    counts = np.asarray(counts, np.float64)
    freq = counts / max(counts.sum(), 1.0)
    w = np.where(freq > 0, np.maximum(freq, 1e-12) ** -balance, 0.0)
    w = np.where(freq > 0, w, w.max(initial=1.0))
    return (w / max(float(np.sum(freq * w)), 1e-12)).astype(np.float32)


class RewardStage:
    """The reward model's objective on the shared loop (see the module docstring)."""

    name = "reward"

    def __init__(
        self,
        cfg: Config,
        num_actions: int,
        latent_shape: tuple[int, int, int],
        *,
        counts: dict[str, np.ndarray] | None = None,
        class_values: tuple[float, float, float] = (-1.0, 0.0, 1.0),
        refractory: tuple[int, int] = (0, 0),
        target: dict[str, Any] | None = None,
    ):
        self.cfg = cfg
        self.num_actions = num_actions
        self.latent_shape = latent_shape
        rc = cfg.reward
        counts = counts or {"reward": np.ones(3), "end": np.ones(2)}
        self.reward_weights = class_weights(counts["reward"], rc.balance)
        self.end_weights = class_weights(counts["end"], rc.balance)  # [not end, end]
        self.class_values = tuple(float(v) for v in class_values)
        self.refractory = (int(refractory[0]), int(refractory[1]))
        # where the model goes: {"world": folder, "also": [folders made from it later], "autoencoder": identity}
        self.target = target
        self.last_eval: dict[str, float] = {}

    def build(self, rngs: nnx.Rngs) -> RewardModel:
        return RewardModel(self.cfg.reward, self.latent_shape, self.num_actions, rngs=rngs)

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        F = self.cfg.reward.frames
        return self.batch({
            "latents": rng.normal(size=(batch_size, F, *self.latent_shape)).astype(np.float16),
            "actions": rng.integers(0, self.num_actions, (batch_size, F)).astype(np.int32),
            "rewards": rng.choice([-1.0, 0.0, 1.0], (batch_size, F)).astype(np.float32),
            "terminals": rng.random((batch_size, F)) < 0.01,
        })  # fmt: skip

    def batch(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A window of F frames -> the model's inputs and targets: the action that made the frame ``lag`` before
        the newest (the newest itself without a lag), that action's reward class, and whether the newest frame is
        the episode's last. (``actions[k]`` and ``rewards[k]`` belong to the step from frame k to k + 1.)"""
        k = -2 - self.cfg.reward.lag
        return {
            "latents": raw["latents"],
            "action": raw["actions"][:, k].astype(np.int32),
            "reward_class": reward_class(raw["rewards"][:, k]),
            "end": raw["terminals"][:, -1].astype(np.int32),
        }

    def logits(self, model: RewardModel, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        return model(batch["latents"].astype(jnp.float32), batch["action"])

    def loss(self, model: RewardModel, batch: dict[str, jax.Array], key: jax.Array):
        z = batch["latents"].astype(jnp.float32)
        k_t, k_eps = jax.random.split(key)
        t = jax.random.uniform(k_t, (z.shape[0], 1, 1, 1, 1), maxval=self.cfg.reward.augment_noise)
        z = diffusion.add_noise(z, jax.random.normal(k_eps, z.shape), t)
        logits, end_logit = model(z, batch["action"])
        return self._loss(logits, end_logit, batch)

    def _loss(self, logits: jax.Array, end_logit: jax.Array, batch: dict[str, jax.Array]):
        cls, end = batch["reward_class"], batch["end"]
        w = jnp.asarray(self.reward_weights)[cls]
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), cls[:, None], axis=1)[:, 0]
        reward_loss = jnp.mean(w * ce)
        bce = -(end * jax.nn.log_sigmoid(end_logit) + (1 - end) * jax.nn.log_sigmoid(-end_logit))
        end_loss = jnp.mean(jnp.asarray(self.end_weights)[end] * bce)
        return reward_loss + end_loss, {"reward_loss": reward_loss, "end_loss": end_loss}

    def evaluate(self, model: RewardModel, batches: list[dict[str, np.ndarray]]):
        """Held-out loss (no noise) and event scores per window (exact positions)."""
        fn = getattr(self, "_eval_fn", None)
        if fn is None:

            def scores(m: RewardModel, b: dict[str, jax.Array]):
                logits, end_logit = self.logits(m, b)
                return logits, end_logit, self._loss(logits, end_logit, b)[0]

            fn = self._eval_fn = nnx.jit(scores)
        preds, ends, real_cls, real_end, losses = [], [], [], [], []
        for raw in batches:
            b = self.batch(raw)
            logits, end_logit, loss = fn(model, {k: jnp.asarray(v) for k, v in b.items()})
            preds.append(np.argmax(np.asarray(logits), -1))
            ends.append(np.asarray(end_logit) > 0)
            real_cls.append(b["reward_class"])
            real_end.append(b["end"].astype(bool))
            losses.append(float(loss))
        pred, real = np.concatenate(preds), np.concatenate(real_cls)
        out = {"eval_loss": float(np.mean(losses))}
        scores = {  # windows are independent samples: an event counts at its exact position only
            "neg": matched_events(pred == NEG, real == NEG, tolerance=0),
            "pos": matched_events(pred == POS, real == POS, tolerance=0),
            "end": matched_events(np.concatenate(ends), np.concatenate(real_end), tolerance=0),
        }
        for name, s in scores.items():
            out.update({f"{name}_{k}": float(s[k]) for k in ("precision", "recall", "f1")})
        out["reward_f1"] = (out["neg_f1"] + out["pos_f1"]) / 2
        self.last_eval = out
        return out, {}

    def extras(self, model: RewardModel) -> dict[str, Any]:
        return self.part_meta()

    def part_meta(self, step: int | None = None) -> dict[str, Any]:
        """What a world folder stores about its reward model (``world.json`` key ``reward``)."""
        meta = {
            "config": config_to_dict(self.cfg.reward),
            "class_values": list(self.class_values),
            "refractory": list(self.refractory),
            "autoencoder": (self.target or {}).get("autoencoder"),
            "eval": self.last_eval,
        }
        if step is not None:
            meta["step"] = step
        return meta

    def export(self, model: RewardModel, step: int, run_root: Path) -> None:
        export_part("reward", model, self.part_meta(step), run_root, self.target)


def export_part(kind: str, model: nnx.Module, meta: dict[str, Any], run_root: Path, target: dict | None) -> None:
    """Write ``<run>/model`` and add the model, as the world part ``kind``, to the worlds it was trained for that
    exist yet: ``target["world"]`` and those of ``target["also"]`` made for the same autoencoder."""
    from worldplay.checkpoint import CheckpointError, attach_part, save_part

    save_part(run_root / "model", kind, model, meta)
    target = target or {}
    world = target.get("world")
    if world is not None and (Path(world) / "world.json").is_file():
        attach_part(world, kind, model, meta)
    for later in target.get("also", ()):
        if not (Path(later) / "world.json").is_file():
            continue
        try:
            attach_part(later, kind, model, meta)
        except CheckpointError as e:  # a decoder-stage world left from an earlier autoencoder: not this one's
            warnings.warn(f"{e}; the {kind} model was not added there", stacklevel=1)


def outcome_counts(
    outcomes: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
    """Counts of the reward classes and of episode ends over episodes' (rewards, terminals), and each class's
    mean reward."""
    r, t = np.concatenate([o[0] for o in outcomes]), np.concatenate([o[1] for o in outcomes])
    cls = reward_class(r)
    counts = {"reward": np.bincount(cls, minlength=3), "end": np.bincount(t.astype(np.int64), minlength=2)}
    neg, pos = r[r < 0], r[r > 0]
    values = (float(neg.mean()) if neg.size else -1.0, 0.0, float(pos.mean()) if pos.size else 1.0)
    return counts, values


def latents_from_world(
    world: Path, datasets: list[Dataset], cache_dir: Path, progress: bool
) -> tuple[list[np.ndarray], dict]:
    """Latents of each of ``datasets`` by a world folder's own autoencoder (cached in ``cache_dir``), and that
    autoencoder's identity."""
    from worldplay.checkpoint import autoencoder_identity
    from worldplay.train.dynamics import world_autoencoder

    ae, meta = world_autoencoder(world)
    identity = autoencoder_identity(meta)
    stats = np.stack([meta["latent_mean"], meta["latent_std"]]).astype(np.float32)
    latents = [encode_cached(ae, stats, ds, cache_dir, identity, progress) for ds in datasets]
    return latents, {"id": identity, "config": meta["autoencoder"]}


def encode_cached(
    ae: Any, stats: np.ndarray, ds: Dataset, cache_dir: Path, identity: str, progress: bool
) -> np.ndarray:
    """Latents of ``ds`` by an autoencoder of identity ``identity``, cached as ``cache_dir/latents-<ds>-<id>.npy``."""
    from worldplay.train.dynamics import encode_dataset

    return encode_dataset(ae, stats, ds, cache_dir / f"latents-{ds.fingerprint()}-{identity}.npy", progress=progress)


def train_reward(
    cfg: Config, *, world: str | Path | None = None, progress: bool = True, later_s: float | None = None
) -> dict[str, Any]:
    """Train (or resume) the reward model of ``cfg`` and add it to its world (see the module docstring).

    Without ``world`` it reads the latents of the run's own autoencoder and goes into the run's world;
    with ``world`` (a world folder) it reads that world's autoencoder's latents and goes into it.
    A dataset without recorded rewards is refused.
    """
    from worldplay.data.loader import split_episodes
    from worldplay.train.loop import loaders, preflight, run_dir, train

    preflight(cfg, "reward")
    ds = open_dataset(cfg.data.dataset)
    if not ds.episodes_with("rewards"):
        raise WorldplayError(
            f"{ds.path}: no episode recorded rewards, so there is no reward to learn; record with "
            "`worldplay record` (it keeps the game's rewards) or import logs with a reward column"
        )
    root = run_dir(cfg, "reward")
    if world is not None:
        world = Path(world)
        (latents,), ae_id = latents_from_world(world, [ds], root, progress)
        target = {"world": str(world), "autoencoder": ae_id}
    else:
        from worldplay.checkpoint import autoencoder_identity
        from worldplay.train.dynamics import run_latents

        _, ae_meta, latents = run_latents(cfg, ds, "reward", progress=progress)  # or --world FOLDER: its own
        ae_id = {"id": autoencoder_identity(ae_meta), "config": ae_meta["config"]["autoencoder"]}
        # the dynamics stage's world, and the decoder stage's (the one that ships) when a retrained model comes later
        target = {
            "world": str(run_dir(cfg, "dynamics") / "world"),
            "also": [str(run_dir(cfg, "decoder") / "world")],
            "autoencoder": ae_id,
        }
    train_eps, _ = split_episodes(ds, cfg.data.holdout, cfg.data.seed)
    outcomes = [ds.read_outcomes(e) for e in train_eps]
    counts, values = outcome_counts(outcomes)
    refractory = refractory_steps([rewards for rewards, _ in outcomes], cfg.reward.frames)
    train_iter, eval_batches = loaders(cfg, "reward", cfg.reward.frames, dataset=ds, latents=latents, outcomes=True)
    stage = RewardStage(
        cfg, len(ds.action_names), latents.shape[1:], counts=counts, class_values=values, refractory=refractory,
        target=target,
    )  # fmt: skip
    result = train(stage, cfg, train_iter, eval_batches, progress=progress, later_s=later_s)
    result["model"] = str(root / "model")
    result["world"] = target["world"]
    return result
