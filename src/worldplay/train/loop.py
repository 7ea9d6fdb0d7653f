"""The one training loop every stage runs on.

Data parallel over a ``jax.sharding.Mesh`` of all devices (one CPU, several GPUs,
or many hosts after ``jax.distributed.initialize()``; Grain shards the data per
process). One jitted step with donated state: loss and gradients, AdamW with
warmup and cosine decay, gradient clipping, an EMA of the weights. Progress with
steps/s and ETA, TensorBoard scalars and images, periodic held-out evaluation,
Orbax checkpoints (latest N and the best) that resume at the same step with the
same data order. A NaN or infinite loss stops the run and keeps the last good
checkpoint.

A stage (``train/autoencoder.py``, ...) supplies a :class:`Stage`: how to build
its model, its loss, how to turn a loader batch into model inputs, and how to
evaluate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from worldplay.config import SAMPLING_KEYS, Config, TrainConfig, config_to_dict
from worldplay.errors import ConfigError, WorldplayError

Batch = dict[str, np.ndarray]
Metrics = dict[str, jax.Array]


class TrainingDiverged(WorldplayError):
    """The loss became NaN or infinite."""


class Stage(Protocol):
    """What a training stage supplies to the shared loop."""

    name: str

    def build(self, rngs: nnx.Rngs) -> nnx.Module: ...

    def batch(self, raw: Batch) -> Batch:
        """Loader batch -> model inputs (numpy, leading axis split over devices)."""
        ...

    def loss(self, model: nnx.Module, batch: dict[str, jax.Array], key: jax.Array) -> tuple[jax.Array, Metrics]: ...

    def evaluate(self, model: nnx.Module, batches: list[Batch]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Held-out metrics (lower ``eval_loss`` is better) and images [H, W, 3] uint8 to log."""
        ...

    def extras(self, model: nnx.Module) -> dict[str, Any]:
        """JSON-able things to store with a checkpoint (e.g. latent statistics)."""
        ...


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup,
        decay_steps=cfg.steps,
        end_value=cfg.lr * cfg.end_lr_fraction,
    )
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule, weight_decay=cfg.weight_decay),
    )


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D data-parallel mesh over every device of every process.

    Auto axis type: the batch is sharded at the step's inputs and the compiler
    propagates that through the model (models stay free of sharding annotations).
    """
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_train_step(
    stage: Stage, graphdef: nnx.GraphDef, tx: optax.GradientTransformation, ema_decay: float
) -> Callable[..., tuple[nnx.State, nnx.State, optax.OptState, Metrics]]:
    """The pure step ``(params, ema, opt_state, batch, key, step) -> (params, ema, opt_state, metrics)``."""

    def step(params, ema, opt_state, batch, key, step_index):
        def loss_fn(p):
            return stage.loss(nnx.merge(graphdef, p), batch, key)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        # EMA with the usual warm-up, so short runs' EMA is not stuck at the initial weights.
        decay = jnp.minimum(ema_decay, (1.0 + step_index) / (10.0 + step_index))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        return params, ema, opt_state, metrics

    return step


def _to_global(batch: Batch, sharding: NamedSharding) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global arrays sharded over the data axis."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


@dataclasses.dataclass
class RunPaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def stage_train_config(cfg: Config, stage_name: str) -> TrainConfig:
    """The ``[train_<stage>]`` section of a config."""
    return getattr(cfg, f"train_{stage_name}")


def loaders(
    cfg: Config, stage_name: str, window: int, **loader_kw: Any
) -> tuple[Iterator[Batch], Callable[[], list[Batch]]]:
    """The training iterator and the fixed held-out batches of a stage, batch split over processes.

    A stage calls ``preflight`` first, so a batch that does not split over the devices is refused before this.
    """
    from worldplay.data.loader import make_loader

    tc = stage_train_config(cfg, stage_name)
    common = dict(
        window=window,
        batch_size=tc.batch_size // jax.process_count(),
        holdout=cfg.data.holdout,
        seed=cfg.data.seed,
        **loader_kw,
    )
    train_iter = iter(make_loader(split="train", num_threads=cfg.data.num_threads, **common))
    held = iter(make_loader(split="heldout", num_threads=0, **common))
    eval_batches = [next(held) for _ in range(tc.eval_batches)]
    return train_iter, lambda: eval_batches


def run_dir(cfg: Config, stage_name: str) -> Path:
    return Path(stage_train_config(cfg, stage_name).runs_dir) / cfg.name / stage_name


def _checkpoint_manager(path: Path, keep: int) -> ocp.CheckpointManager:
    """Keeps the latest ``keep`` checkpoints and the one with the lowest ``eval_loss``.

    ``best_fn`` is set as well as the policy because Orbax writes a checkpoint's
    metrics to disk only when it is; without them a resumed run sees no metrics
    and keeps every older checkpoint forever. ``reverse=True`` sorts by
    descending loss and BestN keeps the tail: the lowest. A checkpoint without
    metrics (one half-deleted when a run was killed) is not kept for that alone.
    """
    cm = ocp.checkpoint_managers

    def eval_loss(metrics: dict[str, float]) -> float:
        return metrics["eval_loss"]

    policy = cm.AnyPreservationPolicy(
        [
            cm.LatestN(n=keep),
            cm.BestN(get_metric_fn=eval_loss, reverse=True, n=1, keep_checkpoints_without_metrics=False),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=eval_loss,
        best_mode="min",
        enable_async_checkpointing=False,
        create=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(path.absolute(), options=options)


# The config sections that fix a stage's parameter shapes: a run can only resume with the same values.
MODEL_SECTIONS = {"autoencoder": ("autoencoder",), "dynamics": ("autoencoder", "dynamics")}


def preflight(cfg: Config, stage_name: str) -> None:
    """The checks a stage makes before it loads, encodes or compiles anything."""
    tc = stage_train_config(cfg, stage_name)
    if tc.batch_size % jax.device_count():
        raise ConfigError(
            f"train_{stage_name}.batch_size: {tc.batch_size} does not split evenly over {jax.device_count()} devices"
        )
    check_resumable(RunPaths(run_dir(cfg, stage_name)), cfg, stage_name)


def check_resumable(paths: RunPaths, cfg: Config, stage_name: str) -> None:
    """Refuse, before anything compiles, to resume a run whose model config has changed since it started."""
    saved_file = paths.root / "config.json"
    if not saved_file.exists() or not any(c.name.isdigit() for c in paths.checkpoints.glob("*")):
        return
    saved, now = json.loads(saved_file.read_text()), json.loads(json.dumps(config_to_dict(cfg)))
    for section in MODEL_SECTIONS.get(stage_name, ()):
        for key, value in now[section].items():
            old = saved.get(section, {}).get(key)
            if old != value and key not in SAMPLING_KEYS:
                raise ConfigError(
                    f"{paths.root}: this run was trained with {section}.{key} = {json.dumps(old)}, the config "
                    f"now says {json.dumps(value)}, so its checkpoints cannot resume. Train under another "
                    f"`name` or `train_{stage_name}.runs_dir`, or delete {paths.root} to start over."
                )


def train(
    stage: Stage,
    cfg: Config,
    train_iter: Iterator[Batch],
    eval_batches: Callable[[], list[Batch]],
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``stage`` to ``steps`` of its ``[train_<stage>]`` section, resuming from the run's latest checkpoint.

    ``train_iter`` must have ``get_state``/``set_state`` (a Grain iterator): its
    state is checkpointed so a resumed run sees the same data order.
    """
    tc = stage_train_config(cfg, stage.name)
    paths = RunPaths(run_dir(cfg, stage.name))
    paths.root.mkdir(parents=True, exist_ok=True)
    check_resumable(paths, cfg, stage.name)
    (paths.root / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))

    model = stage.build(nnx.Rngs(tc.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = make_optimizer(tc)
    params = jax.device_put(params, replicated)
    ema = jax.tree.map(jnp.copy, params)
    opt_state = jax.device_put(tx.init(params), replicated)

    manager = _checkpoint_manager(paths.checkpoints, tc.keep)
    start = 0
    latest = manager.latest_step()
    if latest is not None:
        restored = restore_training(manager, latest, params, opt_state, replicated)
        params, ema, opt_state = restored["params"], restored["ema"], restored["opt_state"]
        train_iter.set_state(restored["data"])
        start = latest
        log(f"resuming {paths.root} from step {start}")

    step_fn = jax.jit(
        make_train_step(stage, graphdef, tx, tc.ema_decay),
        in_shardings=(replicated, replicated, replicated, data_sharding, replicated, replicated),
        out_shardings=(replicated, replicated, replicated, replicated),
        donate_argnums=(0, 1, 2),
    )
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(paths.logs)) if jax.process_index() == 0 else None
    base_key = jax.random.key(tc.seed)
    last_eval: dict[str, float] = {}
    t_last, step_last = time.perf_counter(), start
    bar = tqdm(total=tc.steps, initial=start, disable=not progress, desc=f"train {stage.name}", unit="step")
    try:
        for step in range(start + 1, tc.steps + 1):
            batch = _to_global(stage.batch(next(train_iter)), data_sharding)
            key = jax.random.fold_in(base_key, step)
            params, ema, opt_state, metrics = step_fn(params, ema, opt_state, batch, key, jnp.float32(step))
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                scalars = {k: float(v) for k, v in metrics.items()}
                if not math.isfinite(scalars["loss"]):
                    raise TrainingDiverged(
                        f"loss is {scalars['loss']} at step {step}; stopped. The last good checkpoint "
                        f"(step {manager.latest_step()}) in {paths.checkpoints} is kept. Lower "
                        f"train_{stage.name}.lr or train_{stage.name}.clip_norm and rerun to resume from it."
                    )
                now = time.perf_counter()
                scalars["steps_per_s"] = (step - step_last) / max(now - t_last, 1e-9)
                t_last, step_last = now, step
                bar.set_postfix(loss=f"{scalars['loss']:.4g}")
                if writer:
                    for k, v in scalars.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    _append_jsonl(paths.logs / "metrics.jsonl", {"step": step, "time": time.time(), **scalars})
            if step % tc.eval_every == 0 or step == tc.steps:
                ema_model = nnx.merge(graphdef, ema)
                last_eval, images = stage.evaluate(ema_model, eval_batches())
                if writer:
                    _append_jsonl(paths.logs / "metrics.jsonl", {"step": step, "time": time.time(), "eval": last_eval})
                    for k, v in last_eval.items():
                        writer.add_scalar(f"eval/{k}", v, step)
                    for k, img in images.items():
                        writer.add_image(f"eval/{k}", img, step, dataformats="HWC")
            if step % tc.checkpoint_every == 0 or step == tc.steps:
                if not last_eval:
                    last_eval, _ = stage.evaluate(nnx.merge(graphdef, ema), eval_batches())
                _check_finite(params, step, manager, paths)
                extras = stage.extras(nnx.merge(graphdef, ema))
                manager.save(
                    step,
                    args=ocp.args.Composite(
                        params=ocp.args.StandardSave(params),
                        ema=ocp.args.StandardSave(ema),
                        opt_state=ocp.args.StandardSave(opt_state),
                        data=ocp.args.JsonSave(train_iter.get_state()),
                        meta=ocp.args.JsonSave(
                            {"step": step, "stage": stage.name, "config": config_to_dict(cfg), **extras}
                        ),
                    ),
                    metrics={"eval_loss": float(last_eval.get("eval_loss", float("inf")))},
                )
                manager.wait_until_finished()
                export = getattr(stage, "export", None)
                if export is not None and jax.process_index() == 0:
                    export(nnx.merge(graphdef, ema), step, paths.root)
    finally:
        bar.close()
        if writer:
            writer.close()
        manager.close()
    return {"step": tc.steps, "run_dir": str(paths.root), **last_eval}


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Plain-text metrics beside the TensorBoard files: one JSON object per line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _check_finite(params: nnx.State, step: int, manager: ocp.CheckpointManager, paths: RunPaths) -> None:
    if not all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(params)):
        raise TrainingDiverged(
            f"weights are not finite at step {step}; not saved. The last good checkpoint "
            f"(step {manager.latest_step()}) in {paths.checkpoints} is kept."
        )


def restore_training(
    manager: ocp.CheckpointManager,
    step: int,
    params: nnx.State,
    opt_state: optax.OptState,
    sharding: NamedSharding,
) -> dict[str, Any]:
    """Restore params, EMA, optimizer state and data-iterator state of ``step``."""

    def abstract(tree):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)

    r = manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(params)),
            ema=ocp.args.StandardRestore(abstract(params)),
            opt_state=ocp.args.StandardRestore(abstract(opt_state)),
            data=ocp.args.JsonRestore(),
        ),
    )
    return {"params": r.params, "ema": r.ema, "opt_state": r.opt_state, "data": r.data}
