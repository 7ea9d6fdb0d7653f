"""The rate stage: the model of expected rewards (``models/reward.py``, ``RateModel``) on cached latents.

Each training element is a window of ``rate.history + rate.horizon`` frames of one episode; its step t is
the frame after the history. The model reads the ``rate.frames`` latents ending ``rate.lag`` frames before
t and the ``rate.keys`` actions up to t's, and learns the share of negative, none and positive rewards
over the ``rate.horizon`` steps from t (soft targets, plain cross-entropy: the shares are what a return is
made of, so no class is re-weighted). Latents are noised at a random level up to ``rate.augment_noise``,
as for the event model. ``rate.extra_datasets`` adds episodes of the same game (broader play, say) to the
training set; their held-out episodes are left out, as the main dataset's are.

The latents come from the run's autoencoder or, with ``world=``, a world folder's own; every checkpoint
writes ``<run>/model`` and adds the model to that world as its ``rate`` part (``worldplay eval-agents
--score rate`` scores agents with it).

Evaluation on the main dataset's held-out windows: the loss, and the Pearson correlation of the expected
reward with the realised mean reward over the horizon (``rate_pearson``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay import diffusion
from worldplay.config import Config, config_to_dict
from worldplay.data.format import open_dataset
from worldplay.errors import WorldplayError
from worldplay.models.reward import RateModel, expected_rate, rate_targets
from worldplay.train.reward import encode_cached, export_part, latents_from_world, outcome_counts


class ConcatSource:
    """Several random-access sources as one (elements of the first, then the second's, ...)."""

    def __init__(self, sources: list[Any]):
        self.sources = sources
        self._ends = np.cumsum([len(s) for s in sources])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, i: int) -> Any:
        k = int(np.searchsorted(self._ends, i, side="right"))
        return self.sources[k][i - (int(self._ends[k - 1]) if k else 0)]


class RateStage:
    """The rate model's objective on the shared loop (see the module docstring)."""

    name = "rate"

    def __init__(
        self,
        cfg: Config,
        num_actions: int,
        latent_shape: tuple[int, int, int],
        *,
        class_values: tuple[float, float, float] = (-1.0, 0.0, 1.0),
        target: dict[str, Any] | None = None,
    ):
        self.cfg = cfg
        self.num_actions = num_actions
        self.latent_shape = latent_shape
        self.class_values = tuple(float(v) for v in class_values)
        self.target = target  # {"world": folder, "also": [folders made from it later], "autoencoder": identity}
        self.last_eval: dict[str, float] = {}

    @property
    def window(self) -> int:
        return self.cfg.rate.history + self.cfg.rate.horizon

    def build(self, rngs: nnx.Rngs) -> RateModel:
        return RateModel(self.cfg.rate, self.latent_shape, self.num_actions, rngs=rngs)

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        W = self.window
        return self.batch({
            "latents": rng.normal(size=(batch_size, W, *self.latent_shape)).astype(np.float16),
            "actions": rng.integers(0, self.num_actions, (batch_size, W)).astype(np.int32),
            "rewards": rng.choice([-1.0, 0.0, 1.0], (batch_size, W)).astype(np.float32),
            "terminals": np.zeros((batch_size, W), bool),
        })  # fmt: skip

    def batch(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A window -> the model's inputs and targets at its step t (the frame after the history)."""
        rc = self.cfg.rate
        t = rc.history
        newest = t - rc.lag
        return {
            "latents": raw["latents"][:, newest - rc.frames + 1 : newest + 1],
            "keys": raw["actions"][:, t - rc.keys + 1 : t + 1].astype(np.int32),
            "shares": rate_targets(raw["rewards"][:, t : t + rc.horizon]),
        }

    def loss(self, model: RateModel, batch: dict[str, jax.Array], key: jax.Array):
        z = batch["latents"].astype(jnp.float32)
        k_t, k_eps = jax.random.split(key)
        level = jax.random.uniform(k_t, (z.shape[0], 1, 1, 1, 1), maxval=self.cfg.rate.augment_noise)
        z = diffusion.add_noise(z, jax.random.normal(k_eps, z.shape), level)
        loss = _soft_ce(model(z, batch["keys"]), batch["shares"])
        return loss, {"rate_loss": loss}

    def evaluate(self, model: RateModel, batches: list[dict[str, np.ndarray]]):
        """Held-out loss (no noise), and how well the expected reward follows the realised rate."""
        fn = getattr(self, "_eval_fn", None)
        if fn is None:

            def scores(m: RateModel, b: dict[str, jax.Array], values: jax.Array):
                z = b["latents"].astype(jnp.float32)
                return expected_rate(m, values, z, b["keys"]), _soft_ce(m(z, b["keys"]), b["shares"])

            fn = self._eval_fn = nnx.jit(scores)
        values = jnp.asarray(self.class_values, jnp.float32)
        expected, realised, losses = [], [], []
        for raw in batches:
            b = self.batch(raw)
            e, loss = fn(model, {k: jnp.asarray(v) for k, v in b.items()}, values)
            expected.append(np.asarray(e))
            realised.append(b["shares"] @ np.asarray(self.class_values, np.float32))
            losses.append(float(loss))
        e, r = np.concatenate(expected), np.concatenate(realised)
        ok = e.std() > 0 and r.std() > 0
        out = {"eval_loss": float(np.mean(losses)), "rate_pearson": float(np.corrcoef(e, r)[0, 1]) if ok else 0.0}
        self.last_eval = out
        return out, {}

    def extras(self, model: RateModel) -> dict[str, Any]:
        return self.part_meta()

    def part_meta(self, step: int | None = None) -> dict[str, Any]:
        """What a world folder stores about its rate model (``world.json`` key ``rate``)."""
        meta = {
            "config": {k: v for k, v in config_to_dict(self.cfg.rate).items() if k != "enabled"},  # the model's
            "class_values": list(self.class_values),
            "autoencoder": (self.target or {}).get("autoencoder"),
            "eval": self.last_eval,
        }
        if step is not None:
            meta["step"] = step
        return meta

    def export(self, model: RateModel, step: int, run_root: Path) -> None:
        export_part("rate", model, self.part_meta(step), run_root, self.target)


def _soft_ce(logits: jax.Array, shares: jax.Array) -> jax.Array:
    return -jnp.mean(jnp.sum(shares * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def rate_datasets(cfg: Config) -> list[Any]:
    """The datasets the rate stage trains on (``data.dataset``, then ``rate.extra_datasets``), opened and
    checked: each has recorded rewards and is of the main dataset's game. ``train world`` calls it before its
    first stage, so that a missing extra dataset is refused before hours of other stages, not after."""
    datasets = [open_dataset(cfg.data.dataset)]
    for path in cfg.rate.extra_datasets:
        try:
            datasets.append(open_dataset(path))
        except WorldplayError as e:
            raise WorldplayError(f"rate.extra_datasets: {e}") from None
    for ds in datasets:
        if not ds.episodes_with("rewards"):
            raise WorldplayError(
                f"{ds.path}: no episode recorded rewards, so there is no reward rate to learn; record with "
                "`worldplay record` (it keeps the game's rewards) or import logs with a reward column"
            )
    main = datasets[0]
    for ds in datasets[1:]:
        if tuple(ds.action_names) != tuple(main.action_names) or tuple(ds.frame_shape) != tuple(main.frame_shape):
            raise WorldplayError(
                f"rate.extra_datasets: {ds.path} is not of the same game as {main.path} (other actions or frame "
                "size); give datasets recorded from the same source"
            )
    return datasets


def train_rate(
    cfg: Config, *, world: str | Path | None = None, progress: bool = True, later_s: float | None = None
) -> dict[str, Any]:
    """Train (or resume) the rate model of ``cfg`` and add it to its world (see the module docstring).

    Without ``world`` it reads the latents of the run's own autoencoder and goes into the run's worlds; with
    ``world`` (a world folder) it reads that world's autoencoder's latents and goes into it. Datasets without
    recorded rewards are refused.
    """
    from worldplay.checkpoint import autoencoder_identity
    from worldplay.data.loader import WindowSource, batched, split_episodes
    from worldplay.train.dynamics import run_latents
    from worldplay.train.loop import held_out_batches, preflight, run_dir, stage_train_config, train

    preflight(cfg, "rate")
    datasets = rate_datasets(cfg)
    main = datasets[0]
    root = run_dir(cfg, "rate")
    if world is not None:
        world = Path(world)
        latents, ae_id = latents_from_world(world, datasets, root, progress)
        target: dict[str, Any] = {"world": str(world)}
    else:  # the main dataset's latents are the ones the dynamics stage cached; the extra datasets' go here
        ae, ae_meta, main_latents = run_latents(cfg, main, "rate", progress=progress)
        identity = autoencoder_identity(ae_meta)
        ae_id = {"id": identity, "config": ae_meta["config"]["autoencoder"]}
        stats = np.stack([ae_meta["latent_mean"], ae_meta["latent_std"]]).astype(np.float32)
        latents = [main_latents] + [encode_cached(ae, stats, ds, root, identity, progress) for ds in datasets[1:]]
        target = {"world": str(run_dir(cfg, "dynamics") / "world"), "also": [str(run_dir(cfg, "decoder") / "world")]}
    target["autoencoder"] = ae_id
    stage = RateStage(cfg, len(main.action_names), latents[0].shape[1:], target=target)
    sources, outcomes = [], []
    for ds, z in zip(datasets, latents, strict=True):
        train_eps, _ = split_episodes(ds, cfg.data.holdout, cfg.data.seed)
        sources.append(WindowSource(ds, stage.window, train_eps, z, outcomes=True))
        outcomes += [ds.read_outcomes(e) for e in train_eps]
    source = ConcatSource(sources)
    if len(source) == 0:
        raise WorldplayError(
            f"{main.path}: no training episode has {stage.window} frames (rate.history + rate.horizon); record "
            "longer episodes or lower rate.keys, rate.lag or rate.horizon"
        )
    _, values = outcome_counts(outcomes)
    stage.class_values = tuple(float(v) for v in values)
    tc = stage_train_config(cfg, "rate")
    train_iter = iter(
        batched(source, batch_size=tc.batch_size // jax.process_count(), seed=cfg.data.seed,
                num_threads=cfg.data.num_threads)
    )  # fmt: skip
    eval_batches = held_out_batches(cfg, "rate", stage.window, dataset=main, latents=latents[0], outcomes=True)
    result = train(stage, cfg, train_iter, lambda: eval_batches, progress=progress, later_s=later_s)
    result["model"] = str(root / "model")
    result["world"] = target["world"]
    return result
