"""``worldplay train world``: every stage of a config in order, each resuming, with a projected wall time.

    cfg = load_config("configs/boxing-cpu.toml")
    plan = project_schedule(cfg)   # {"stages": {name: {"s_per_step", "steps_left", ...}}, "projected_s"}
    results = train_world(cfg)     # {"autoencoder": {...}, "dynamics": {...}, ..., "world": "runs/<name>/.../world"}

The projection times each stage's own training step (the same compiled program, model, optimizer and
batch as the run) for a few steps on synthetic inputs, and multiplies by the steps the stage has left.
It leaves out what is not a training step: loading, encoding the dataset for the dynamics stage, and the
periodic held-out evaluations (``docs/training.md`` compares projections with measured runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worldplay.config import Config
from worldplay.train.loop import format_seconds, run_dir, stage_train_config, time_steps

# The stages of a world, in the order they train: each one reads what the ones before it wrote.
# The reward and rate stages need only the autoencoder; they come after the dynamics so that they can add
# themselves to the world. The decoder stage fine-tunes the decoder of that world (reward and rate models
# included) into a new one.
STAGES = ("autoencoder", "dynamics", "reward", "rate", "decoder")


def _stage_objective(cfg: Config, name: str, num_actions: int) -> Any:
    """The objective of stage ``name`` without its dataset: enough to build the model and time a step."""
    if name == "autoencoder":
        from worldplay.train.autoencoder import AutoencoderStage

        return AutoencoderStage(cfg)
    if name == "reward":
        from worldplay.train.reward import RewardStage

        return RewardStage(cfg, num_actions, cfg.autoencoder.latent_shape)
    if name == "rate":
        from worldplay.train.rate import RateStage

        return RateStage(cfg, num_actions, cfg.autoencoder.latent_shape)
    if name == "decoder":
        from worldplay.train.decoder import DecoderStage

        return DecoderStage(cfg)
    from worldplay.train.dynamics import DynamicsObjective

    return DynamicsObjective(cfg, num_actions)


def _trainer(name: str) -> Callable[..., dict[str, Any]]:
    if name == "autoencoder":
        from worldplay.train.autoencoder import train_autoencoder

        return train_autoencoder
    if name == "reward":
        from worldplay.train.reward import train_reward

        return train_reward
    if name == "rate":
        from worldplay.train.rate import train_rate

        return train_rate
    if name == "decoder":
        from worldplay.train.decoder import train_decoder

        return train_decoder
    from worldplay.train.dynamics import train_dynamics

    return train_dynamics


def completed_steps(cfg: Config, name: str) -> int:
    """The step of the latest complete checkpoint of stage ``name`` of ``cfg`` (0 if none)."""
    ckpts = run_dir(cfg, name) / "checkpoints"
    steps = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()]
    return max(steps, default=0)


def stages_of(cfg: Config) -> tuple[str, ...]:
    """The stages ``cfg`` trains: all of :data:`STAGES`, but the reward stage only for a dataset with rewards,
    the rate stage only when ``rate.enabled`` (and the dataset has rewards) and the decoder stage only when
    ``decoder.enabled``."""
    from worldplay.data.format import open_dataset
    from worldplay.errors import WorldplayError

    try:
        has_rewards = open_dataset(cfg.data.dataset).episodes_with("rewards") > 0
    except WorldplayError:  # no dataset here (`bench train` on another machine): project every stage
        has_rewards = True
    skip = {"reward", "rate"} if not has_rewards else set()
    if not cfg.rate.enabled:
        skip.add("rate")
    if not cfg.decoder.enabled:
        skip.add("decoder")
    return tuple(s for s in STAGES if s not in skip)


def _num_actions(cfg: Config) -> int:
    """The dataset's action count if it can be read, else the full Atari set (18): only sizes one embedding."""
    from worldplay.data.format import open_dataset
    from worldplay.errors import WorldplayError

    try:
        return len(open_dataset(cfg.data.dataset).action_names)
    except WorldplayError:  # no dataset here (e.g. `bench train` on another machine): only sizes one embedding
        return 18


def project_schedule(cfg: Config, *, stages: tuple[str, ...] | None = None, resume: bool = True) -> dict[str, Any]:
    """Seconds per step of each stage, measured here, and the projected wall seconds of the whole schedule.

    ``stages`` defaults to :func:`stages_of`. With ``resume`` the steps already checkpointed are left out
    (what ``train world`` still has to do).
    """
    stages = stages_of(cfg) if stages is None else stages
    num_actions = _num_actions(cfg)
    out: dict[str, Any] = {"stages": {}, "projected_s": 0.0}
    for name in stages:
        tc = stage_train_config(cfg, name)
        done = min(completed_steps(cfg, name), tc.steps) if resume else 0
        left = tc.steps - done
        stage = {"steps": tc.steps, "steps_left": left, "batch_size": tc.batch_size, "s_per_step": None}
        early_left = max(0, tc.early_window_steps - done) if tc.early_window else 0
        if left:  # a finished stage is not timed; the cheaper early-window steps are timed apart
            frames = [None, tc.early_window] if early_left else [None]  # None: the whole window
            timed = time_steps(_stage_objective(cfg, name, num_actions), tc, frames)
            stage.update(timed[0])
        stage["projected_s"] = (left - early_left) * (stage["s_per_step"] or 0.0)
        if early_left:  # (only while steps are left, so they were timed)
            stage["early_window"] = {"frames": tc.early_window, "steps_left": early_left, **timed[1]}
            stage["projected_s"] += early_left * timed[1]["s_per_step"]
        out["stages"][name] = stage
        out["projected_s"] += stage["projected_s"]
    return out


def format_schedule(plan: dict[str, Any]) -> str:
    lines = []
    for name, s in plan["stages"].items():
        if not s["steps_left"]:
            lines.append(f"  {name:<12} done ({s['steps']:,} steps)")
            continue
        early = s.get("early_window")
        if early is None:
            lines.append(
                f"  {name:<12} {s['steps_left']:>7,} of {s['steps']:,} steps x {s['s_per_step']:.3f} s/step "
                f"(batch {s['batch_size']}) = {format_seconds(s['projected_s'])}"
            )
            continue
        late = s["steps_left"] - early["steps_left"]
        lines.append(
            f"  {name:<12} {s['steps_left']:>7,} of {s['steps']:,} steps (batch {s['batch_size']}): "
            f"{early['steps_left']:,} x {early['s_per_step']:.3f} s/step on {early['frames']} frames + "
            f"{late:,} x {s['s_per_step']:.3f} s/step = {format_seconds(s['projected_s'])}"
        )
    lines.append(
        f"  projected    {format_seconds(plan['projected_s'])} of training steps on this machine "
        "(plus loading, encoding, the decoder stage's world predictions and evaluations)"
    )
    return "\n".join(lines)


def train_world(
    cfg: Config, *, progress: bool = True, project: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train every stage of ``cfg`` in order, each resuming from its own latest checkpoint.

    First, the projected wall time of what is left (``project_schedule``) is printed; each stage's progress
    bar then carries an ETA of the whole schedule: its own remaining steps at the measured rate plus the
    projection of the stages after it. A finished stage is skipped by its own resume (no step left).
    """
    import jax

    from worldplay.train.loop import preflight

    stages = stages_of(cfg)
    for name in stages:  # every stage's checks before the first one starts
        preflight(cfg, name)
    if "rate" in stages:  # its extra datasets are there and of the same game
        from worldplay.train.rate import rate_datasets

        rate_datasets(cfg)
    if "reward" not in stages and jax.process_index() == 0:
        skipped = "reward and rate stages" if cfg.rate.enabled else "reward stage"
        log(f"{cfg.data.dataset}: no recorded rewards, so no {skipped}; the world will play with reward 0")
    plan = project_schedule(cfg, stages=stages) if project else None
    if plan is not None and jax.process_index() == 0:
        log(f"schedule of {cfg.name}:\n{format_schedule(plan)}")
    results: dict[str, Any] = {}
    for i, name in enumerate(stages):
        later = None if plan is None else sum(plan["stages"][n]["projected_s"] for n in stages[i + 1 :])
        if jax.process_index() == 0:
            log(f"== stage {i + 1}/{len(stages)}: {name}")
        results[name] = _trainer(name)(cfg, progress=progress, later_s=later)
    results["world"] = results["decoder" if "decoder" in results else "dynamics"].get("world")
    if plan is not None:
        results["projected_s"] = round(plan["projected_s"], 1)
    return results
