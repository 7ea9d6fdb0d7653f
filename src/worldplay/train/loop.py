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
from collections.abc import Callable, Iterator, Sequence
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

from worldplay.compiled import hot_jit
from worldplay.config import FINE_TUNE_KEYS, SAMPLING_KEYS, STAGE_SWITCHES, Config, TrainConfig, config_to_dict
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

    def example_batch(self, batch_size: int) -> Batch:
        """Synthetic model inputs of one step's shapes (``batch_size`` rows), for timing the step."""
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
    cfg: Config, stage_name: str, window: int, *, eval_window: int | None = None, **loader_kw: Any
) -> tuple[Iterator[Batch], Callable[[], list[Batch]]]:
    """The training iterator (this process's shard) and the fixed held-out batches of a stage.

    The training batch is split over processes; every process reads the same held-out batches (of the
    whole batch size, windows of ``eval_window`` frames, default ``window``), so evaluation does not
    depend on how many processes train. A stage calls ``preflight`` first, so a batch that does not
    split over the devices is refused before this.
    """
    from worldplay.data.loader import make_loader

    tc = stage_train_config(cfg, stage_name)
    train_iter = iter(
        make_loader(
            split="train",
            window=window,
            batch_size=tc.batch_size // jax.process_count(),
            holdout=cfg.data.holdout,
            seed=cfg.data.seed,
            num_threads=cfg.data.num_threads,
            **loader_kw,
        )
    )
    eval_batches = held_out_batches(cfg, stage_name, eval_window or window, **loader_kw)
    return train_iter, lambda: eval_batches


def held_out_batches(cfg: Config, stage_name: str, window: int, **loader_kw: Any) -> list[Batch]:
    """The fixed held-out batches a stage evaluates on: ``eval_batches`` batches of the whole batch size,
    the same on every process."""
    from worldplay.data.loader import make_loader

    tc = stage_train_config(cfg, stage_name)
    held = iter(
        make_loader(
            split="heldout",
            window=window,
            batch_size=tc.batch_size,
            holdout=cfg.data.holdout,
            seed=cfg.data.seed,
            num_threads=0,
            shard_index=0,
            shard_count=1,
            **loader_kw,
        )
    )
    return [next(held) for _ in range(tc.eval_batches)]


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
MODEL_SECTIONS = {
    "autoencoder": ("autoencoder",),
    "dynamics": ("autoencoder", "dynamics"),
    "reward": ("reward",),
    "rate": ("rate",),
    "decoder": ("autoencoder",),
    "idm": ("idm",),
}


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
    # a key that a run's config.json lacks was added later, with a default that keeps what the code did before
    defaults = json.loads(json.dumps(config_to_dict(Config())))
    for section in MODEL_SECTIONS.get(stage_name, ()):
        for key, value in now[section].items():
            old = saved.get(section, {}).get(key, defaults[section][key])
            if old != value and key not in SAMPLING_KEYS | FINE_TUNE_KEYS | STAGE_SWITCHES:
                raise ConfigError(
                    f"{paths.root}: this run was trained with {section}.{key} = {json.dumps(old)}, the config "
                    f"now says {json.dumps(value)}, so its checkpoints cannot resume. Train under another "
                    f"`name` or `train_{stage_name}.runs_dir`, or delete {paths.root} to start over."
                )


@dataclasses.dataclass
class StepState:
    """A stage's model split for training: its graph, and params, EMA and optimizer state on the mesh."""

    graphdef: nnx.GraphDef
    params: nnx.State
    ema: nnx.State
    opt_state: optax.OptState
    step_fn: Callable[..., tuple[nnx.State, nnx.State, optax.OptState, Metrics]]
    data_sharding: NamedSharding
    replicated: NamedSharding


def prepare_step(stage: Stage, tc: TrainConfig, mesh: jax.sharding.Mesh) -> StepState:
    """Build ``stage``'s model at ``tc.seed`` and its jitted training step, replicated over ``mesh``.

    The one place a step is made: training runs it, and :func:`time_steps` times the same program.
    """
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))
    model = stage.build(nnx.Rngs(tc.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = make_optimizer(tc)
    params = jax.device_put(params, replicated)
    ema = jax.tree.map(jnp.copy, params)
    opt_state = jax.device_put(tx.init(params), replicated)
    step_fn = hot_jit(  # the program a training runs thousands of times
        make_train_step(stage, graphdef, tx, tc.ema_decay),
        in_shardings=(replicated, replicated, replicated, data_sharding, replicated, replicated),
        out_shardings=(replicated, replicated, replicated, replicated),
        donate_argnums=(0, 1, 2),
    )
    return StepState(graphdef, params, ema, opt_state, step_fn, data_sharding, replicated)


def first_frames(batch: Batch, frames: int) -> Batch:
    """The first ``frames`` frames of each window of a batch of windows (every array [B, T, ...])."""
    return {k: v[:, :frames] for k, v in batch.items()}


def time_steps(
    stage: Stage,
    tc: TrainConfig,
    frames: Sequence[int | None],
    *,
    min_steps: int = 4,
    min_seconds: float = 2.0,
    max_steps: int = 50,
) -> list[dict[str, float]]:
    """Seconds per training step of ``stage`` on this machine, for each entry of ``frames``, from a short
    warm-up on synthetic inputs.

    The step is the one :func:`train` runs (same model, optimizer, shardings and batch; an entry ``F`` cuts the
    batch to the first F frames of each window, as in the steps of ``early_window``; None keeps the whole
    window). The model and optimizer state are built once; each batch shape's step is compiled
    (``compile_s``), run twice untimed, then timed over at least ``min_steps`` steps and ``min_seconds``.
    """
    t0 = time.perf_counter()
    st = prepare_step(stage, tc, make_mesh())
    example = stage.example_batch(tc.batch_size // jax.process_count())
    key = jax.random.key(0)
    params, ema, opt_state = st.params, st.ema, st.opt_state  # donated to each step: carried from one to the next
    out = []
    for f in frames:
        batch = _to_global(example if f is None else first_frames(example, f), st.data_sharding)
        for i in range(2):
            params, ema, opt_state, m = st.step_fn(params, ema, opt_state, batch, key, jnp.float32(i + 1))
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0
        n, t = 0, time.perf_counter()
        while n < max_steps and (n < min_steps or time.perf_counter() - t < min_seconds):
            params, ema, opt_state, m = st.step_fn(params, ema, opt_state, batch, key, jnp.float32(n + 3))
            jax.block_until_ready(m)
            n += 1
        out.append({"s_per_step": (time.perf_counter() - t) / n, "compile_s": compile_s, "timed_steps": n})
        t0 = time.perf_counter()
    return out


def _host_copy(tree: nnx.State) -> nnx.State:
    """A process-local copy of replicated arrays (on this process's first device).

    Evaluation and export run on one process's own devices: in a multi-process run, a jitted function given
    arrays that span processes would need every process to call it with the same inputs.
    """
    if jax.process_count() == 1:
        return tree
    device = jax.local_devices()[0]
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x.addressable_data(0)), device), tree)


def format_seconds(seconds: float) -> str:
    """``3h05m``, ``12m30s`` or ``45s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def train(
    stage: Stage,
    cfg: Config,
    train_iter: Iterator[Batch],
    eval_batches: Callable[[], list[Batch]],
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    later_s: float | None = None,
) -> dict[str, Any]:
    """Train ``stage`` to ``steps`` of its ``[train_<stage>]`` section, resuming from the run's latest checkpoint.

    ``train_iter`` must have ``get_state``/``set_state`` (a Grain iterator): its
    state is checkpointed so a resumed run sees the same data order. ``later_s``:
    the projected seconds of the stages that follow this one (``train world``),
    added to this stage's own remaining time in the progress bar's ETA of the whole schedule.

    The stage's wall-clock seconds (``elapsed_s``, compilation and evaluation included, summed over
    resumes) go into every checkpoint and every line of ``logs/metrics.jsonl``; held-out metrics are also
    written to TensorBoard against them (``eval_wallclock/*``, in whole seconds).
    """
    t_start = time.perf_counter()
    tc = stage_train_config(cfg, stage.name)
    paths = RunPaths(run_dir(cfg, stage.name))
    paths.root.mkdir(parents=True, exist_ok=True)
    check_resumable(paths, cfg, stage.name)
    if jax.process_index() == 0:
        (paths.root / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
    st = prepare_step(stage, tc, make_mesh())
    graphdef, params, ema, opt_state, step_fn = st.graphdef, st.params, st.ema, st.opt_state, st.step_fn

    manager = _checkpoint_manager(paths.checkpoints, tc.keep)
    start, elapsed_before = 0, 0.0
    latest = manager.latest_step()
    if latest is not None:
        restored = restore_training(manager, latest, params, opt_state, st.replicated)
        params, ema, opt_state = restored["params"], restored["ema"], restored["opt_state"]
        train_iter.set_state(restored["data"])
        start, elapsed_before = latest, float(restored["meta"].get("elapsed_s", 0.0))
        log(f"resuming {paths.root} from step {start}")

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(paths.logs)) if jax.process_index() == 0 else None
    base_key = jax.random.key(tc.seed)
    last_eval: dict[str, float] = {}
    t_last, step_last = time.perf_counter(), start
    rate: float | None = None  # steps/s, smoothed, for the ETA of the whole schedule
    bar = tqdm(total=tc.steps, initial=start, disable=not progress, desc=f"train {stage.name}", unit="step")
    try:
        for step in range(start + 1, tc.steps + 1):
            batch = stage.batch(next(train_iter))
            window = frames = next(iter(batch.values())).shape[1] if tc.early_window else 0
            early = bool(tc.early_window) and step <= tc.early_window_steps
            if early:
                frames = tc.early_window
                batch = first_frames(batch, frames)  # a second compiled step, for these steps only
            batch = _to_global(batch, st.data_sharding)
            key = jax.random.fold_in(base_key, step)
            params, ema, opt_state, metrics = step_fn(params, ema, opt_state, batch, key, jnp.float32(step))
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                scalars = {k: float(v) for k, v in metrics.items()}
                if tc.early_window:  # frames per window of this step's batch: where the schedule switched
                    scalars["frames"] = float(frames)
                if not math.isfinite(scalars["loss"]):
                    raise TrainingDiverged(
                        f"loss is {scalars['loss']} at step {step}; stopped. The last good checkpoint "
                        f"(step {manager.latest_step()}) in {paths.checkpoints} is kept. Lower "
                        f"train_{stage.name}.lr or train_{stage.name}.clip_norm and rerun to resume from it."
                    )
                now = time.perf_counter()
                scalars["steps_per_s"] = (step - step_last) / max(now - t_last, 1e-9)
                rate = scalars["steps_per_s"] if rate is None else 0.7 * rate + 0.3 * scalars["steps_per_s"]
                t_last, step_last = now, step
                postfix = {"loss": f"{scalars['loss']:.4g}"}
                if later_s is not None:
                    left = float(tc.steps - step)
                    if early:  # a whole-window step to come costs about window / early_window of these
                        early_left = tc.early_window_steps - step
                        left = early_left + (left - early_left) * window / tc.early_window
                    postfix["all stages ETA"] = format_seconds(left / max(rate, 1e-9) + later_s)
                bar.set_postfix(postfix)
                if writer:
                    for k, v in scalars.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    _append_jsonl(
                        paths.logs / "metrics.jsonl",
                        {"step": step, "time": time.time(), "elapsed_s": round(elapsed(), 2), **scalars},
                    )
            if step % tc.eval_every == 0 or step == tc.steps:
                last_eval, images = stage.evaluate(nnx.merge(graphdef, _host_copy(ema)), eval_batches())
                if writer:
                    wall = elapsed()
                    _append_jsonl(
                        paths.logs / "metrics.jsonl",
                        {"step": step, "time": time.time(), "elapsed_s": round(wall, 2), "eval": last_eval},
                    )
                    for k, v in last_eval.items():
                        writer.add_scalar(f"eval/{k}", v, step)
                        writer.add_scalar(f"eval_wallclock/{k}", v, round(wall))
                    for k, img in images.items():
                        writer.add_image(f"eval/{k}", img, step, dataformats="HWC")
            if step % tc.checkpoint_every == 0 or step == tc.steps:
                ema_local = _host_copy(ema)
                if not last_eval:
                    last_eval, _ = stage.evaluate(nnx.merge(graphdef, ema_local), eval_batches())
                _check_finite(params, step, manager, paths)
                extras = stage.extras(nnx.merge(graphdef, ema_local))
                manager.save(
                    step,
                    args=ocp.args.Composite(
                        params=ocp.args.StandardSave(params),
                        ema=ocp.args.StandardSave(ema),
                        opt_state=ocp.args.StandardSave(opt_state),
                        data=ocp.args.JsonSave(train_iter.get_state()),
                        meta=ocp.args.JsonSave(
                            {
                                "step": step,
                                "stage": stage.name,
                                "config": config_to_dict(cfg),
                                "elapsed_s": elapsed(),
                                **extras,
                            }
                        ),
                    ),
                    metrics={"eval_loss": float(last_eval.get("eval_loss", float("inf")))},
                )
                manager.wait_until_finished()
                export = getattr(stage, "export", None)
                if export is not None and jax.process_index() == 0:
                    export(nnx.merge(graphdef, ema_local), step, paths.root)
    finally:
        bar.close()
        if writer:
            writer.close()
        manager.close()
    return {"step": tc.steps, "run_dir": str(paths.root), "elapsed_s": round(elapsed(), 1), **last_eval}


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Plain-text metrics beside the TensorBoard files: one JSON object per line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _check_finite(params: nnx.State, step: int, manager: ocp.CheckpointManager, paths: RunPaths) -> None:
    if not all(np.isfinite(np.asarray(x.addressable_data(0))).all() for x in jax.tree.leaves(params)):
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
    """Restore params, EMA, optimizer state, data-iterator state and metadata of ``step``."""

    def abstract(tree):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)

    r = manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(params)),
            ema=ocp.args.StandardRestore(abstract(params)),
            opt_state=ocp.args.StandardRestore(abstract(opt_state)),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return {"params": r.params, "ema": r.ema, "opt_state": r.opt_state, "data": r.data, "meta": r.meta or {}}
