"""The IDM stage: the inverse-dynamics model (``models/idm.py``) on a labelled dataset's frames.

Each training element is a window of ``idm.before + 2`` frames of one episode, t - before ... t + 1;
the target is ``actions[t]``, the action that turned frame t into frame t + 1 (the dataset's
alignment). Every checkpoint writes ``<run>/model``, a self-describing IDM folder (``params/`` and
``part.json``: its config, action names, frame shape, the dataset and split it trained on, its
held-out accuracy), which ``worldplay eval``, ``worldplay import --labeller`` and a world folder's
``idm/`` use as it is. With ``world=`` it is also copied into that world folder.

Evaluation on held-out windows: the loss and top-1 accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldplay.config import Config, config_to_dict
from worldplay.data.format import Dataset, open_dataset
from worldplay.models.idm import InverseDynamics


class IdmStage:
    """The IDM's objective on the shared loop: cross-entropy of the action between frames t and t + 1."""

    name = "idm"

    def __init__(self, cfg: Config, ds: Dataset, *, world: str | Path | None = None):
        self.cfg = cfg
        self.ds = ds
        self.action_names = tuple(ds.action_names)
        self.frame_shape = tuple(int(x) for x in ds.frame_shape)
        self.world = world
        self.last_eval: dict[str, float] = {}

    def build(self, rngs: nnx.Rngs) -> InverseDynamics:
        return InverseDynamics(self.cfg.idm, self.frame_shape, len(self.action_names), rngs=rngs)

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        F = self.cfg.idm.frames
        return self.batch({
            "frames": rng.integers(0, 256, (batch_size, F, *self.frame_shape), dtype=np.uint8),
            "actions": rng.integers(0, len(self.action_names), (batch_size, F)).astype(np.int32),
        })  # fmt: skip

    def batch(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A window t - before ... t + 1 -> its frames and ``actions[t]``."""
        return {"frames": raw["frames"], "action": raw["actions"][:, self.cfg.idm.before].astype(np.int32)}

    def loss(self, model: InverseDynamics, batch: dict[str, jax.Array], key: jax.Array):
        logits = model(batch["frames"])
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["action"][:, None], axis=1)[:, 0]
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["action"])
        return jnp.mean(ce), {"accuracy": accuracy}

    def evaluate(self, model: InverseDynamics, batches: list[dict[str, np.ndarray]]):
        fn = getattr(self, "_eval_fn", None)
        if fn is None:
            fn = self._eval_fn = nnx.jit(lambda m, b: self.loss(m, b, jax.random.key(0)))
        losses, accs = [], []
        for raw in batches:
            loss, metrics = fn(model, {k: jnp.asarray(v) for k, v in self.batch(raw).items()})
            losses.append(float(loss))
            accs.append(float(metrics["accuracy"]))
        self.last_eval = {"eval_loss": float(np.mean(losses)), "accuracy": float(np.mean(accs))}
        return self.last_eval, {}

    def extras(self, model: InverseDynamics) -> dict[str, Any]:
        return self.part_meta()

    def part_meta(self, step: int | None = None) -> dict[str, Any]:
        """What an IDM folder's part.json says about it (everything needed to load and use it)."""
        meta = {
            "config": config_to_dict(self.cfg.idm),
            "action_names": list(self.action_names),
            "frame_shape": list(self.frame_shape),
            "fps": self.ds.fps,
            "dataset": {"path": str(self.ds.path), "fingerprint": self.ds.fingerprint()},
            "data": {"holdout": self.cfg.data.holdout, "seed": self.cfg.data.seed},
            "eval": self.last_eval,
        }
        if step is not None:
            meta["step"] = step
        return meta

    def export(self, model: InverseDynamics, step: int, run_root: Path) -> None:
        from worldplay.checkpoint import save_part
        from worldplay.idm import attach_idm

        folder = save_part(run_root / "model", "idm", model, self.part_meta(step))
        if self.world is not None:
            attach_idm(self.world, folder)


def train_idm(cfg: Config, *, world: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the IDM of ``cfg`` on its dataset's recorded actions; with ``world``, add it to that world."""
    from worldplay.train.loop import loaders, preflight, run_dir, train

    preflight(cfg, "idm")
    ds = open_dataset(cfg.data.dataset)
    if world is not None:
        from worldplay.idm import check_world_matches

        check_world_matches(world, ds)
    train_iter, eval_batches = loaders(cfg, "idm", cfg.idm.frames, dataset=ds)
    stage = IdmStage(cfg, ds, world=world)
    result = train(stage, cfg, train_iter, eval_batches, progress=progress)
    result["model"] = str(run_dir(cfg, "idm") / "model")
    if world is not None:
        result["world"] = str(world)
    return result
