"""Configuration: frozen dataclasses per part, loaded from TOML, overridden with ``--set``.

A config file has one table per part (``[data]``, ...). Every key is checked
against the dataclass it fills: an unknown key, a value of the wrong type or a
value out of range is refused with an error that names the file, the key and
what is allowed, before anything is built or compiled.

    cfg = load_config("configs/toy.toml", ["train_autoencoder.batch_size=8"])
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worldplay.errors import ConfigError


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclasses.dataclass(frozen=True, slots=True)
class DataConfig:
    """Where the gameplay comes from and how it is cut into training windows."""

    dataset: str = "data/toy"  # dataset folder, relative to the working directory
    holdout: float = 0.1  # fraction of episodes held out for evaluation, chosen by hash of episode and seed
    seed: int = 0  # shuffling and split seed
    num_threads: int = 2  # Grain reader threads per process

    def __post_init__(self) -> None:
        _require(0.0 <= self.holdout < 1.0, "data.holdout", f"must be in [0, 1), got {self.holdout}")
        _require(0 <= self.seed < 2**32, "data.seed", f"must be in [0, 2**32), got {self.seed}")
        _require(self.num_threads >= 0, "data.num_threads", f"must be >= 0, got {self.num_threads}")


@dataclasses.dataclass(frozen=True, slots=True)
class AutoencoderConfig:
    """Per-frame convolutional autoencoder: frame [H, W, 3] <-> latent grid [H/2^L, W/2^L, C]."""

    channels: tuple[int, ...] = (32, 64, 96)  # width at each resolution; one stride-2 step between levels
    blocks: int = 1  # residual blocks per level
    latent_channels: int = 16  # C of the latent grid
    frame_size: int = 64  # H = W of the frames it encodes
    motion_weight: float = 0.0  # training: extra loss weight on pixels that changed since the previous frame

    def __post_init__(self) -> None:
        _require(len(self.channels) >= 1, "autoencoder.channels", "needs at least one level")
        _require(all(c >= 1 for c in self.channels), "autoencoder.channels", f"must be positive, got {self.channels}")
        _require(self.blocks >= 0, "autoencoder.blocks", f"must be >= 0, got {self.blocks}")
        _require(self.latent_channels >= 1, "autoencoder.latent_channels", "must be >= 1")
        _require(self.motion_weight >= 0.0, "autoencoder.motion_weight", f"must be >= 0, got {self.motion_weight}")
        down = 2 ** len(self.channels)
        _require(
            self.frame_size % down == 0,
            "autoencoder.frame_size",
            f"{self.frame_size} is not divisible by 2^{len(self.channels)} = {down} (one halving per level)",
        )

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.frame_size // 2 ** len(self.channels)
        return (s, s, self.latent_channels)


@dataclasses.dataclass(frozen=True, slots=True)
class DynamicsConfig:
    """Block-causal latent-diffusion transformer over a window of frames (see docs/architecture.md)."""

    patch: int = 2  # latent patch side: an 8x8 latent grid with patch 2 gives 16 tokens per frame
    width: int = 256  # model width D
    depth: int = 6  # transformer blocks
    heads: int = 4
    mlp_ratio: float = 4.0
    window: int = 16  # frames per training sequence; at play time, the frames the newest one attends to
    null_action_prob: float = 0.15  # chance per frame that training sees the learned null action (for CFG)
    context_noise: float = 0.1  # noise level of context frames in training (and at sampling, unless the next key)
    clean_context_prob: float = 0.5  # chance per frame that training draws a low noise level (context-like)
    noise_level_power: float = 1.0  # training: non-context levels drawn with density (k+1) t^k (1: density 2t)
    motion_weight: float = 0.0  # training: extra loss weight where a frame changed (diffusion.motion_weights)
    sprite_weight: float = 0.0  # training: extra loss weight where a frame differs from the background (same)
    own_context_prob: float = 0.0  # training: chance per frame that later frames see the model's own prediction of it
    sampling_steps: int = 4  # Euler steps per generated frame
    sampling_context_noise: float | None = None  # noise level of context frames at sampling (None: context_noise)
    guidance: float = 1.5  # default classifier-free guidance scale on the action

    def __post_init__(self) -> None:
        _require(self.patch >= 1, "dynamics.patch", f"must be >= 1, got {self.patch}")
        for key in ("width", "depth", "heads", "sampling_steps"):
            _require(getattr(self, key) >= 1, f"dynamics.{key}", f"must be >= 1, got {getattr(self, key)}")
        _require(
            self.width % self.heads == 0 and (self.width // self.heads) % 2 == 0,
            "dynamics.width",
            f"{self.width} must split into {self.heads} heads of an even size",
        )
        _require(self.mlp_ratio > 0, "dynamics.mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        _require(self.window >= 2, "dynamics.window", f"must be >= 2 (context + the new frame), got {self.window}")
        _require(0.0 <= self.null_action_prob < 1.0, "dynamics.null_action_prob", "must be in [0, 1)")
        _require(0.0 <= self.context_noise < 1.0, "dynamics.context_noise", "must be in [0, 1)")
        _require(
            self.sampling_context_noise is None or 0.0 <= self.sampling_context_noise < 1.0,
            "dynamics.sampling_context_noise",
            "must be in [0, 1), or left out to sample at context_noise",
        )
        _require(0.0 <= self.clean_context_prob <= 1.0, "dynamics.clean_context_prob", "must be in [0, 1]")
        _require(self.noise_level_power >= 0.0, "dynamics.noise_level_power", "must be >= 0")
        _require(self.motion_weight >= 0.0, "dynamics.motion_weight", f"must be >= 0, got {self.motion_weight}")
        _require(self.sprite_weight >= 0.0, "dynamics.sprite_weight", f"must be >= 0, got {self.sprite_weight}")
        _require(0.0 <= self.own_context_prob <= 1.0, "dynamics.own_context_prob", "must be in [0, 1]")
        _require(self.guidance >= 0.0, "dynamics.guidance", f"must be >= 0, got {self.guidance}")

    @property
    def context_noise_at_sampling(self) -> float:
        """The noise level a world gives each frame it appends to its context."""
        return self.context_noise if self.sampling_context_noise is None else self.sampling_context_noise


@dataclasses.dataclass(frozen=True, slots=True)
class DecoderConfig:
    """The decoder stage (``train/decoder.py``): the autoencoder's decoder fine-tuned, after the dynamics stage,
    on the world's own one-step predictions as well as on encoded frames. Off unless ``enabled``."""

    enabled: bool = False  # a stage of `train world` (after dynamics and reward); measured on the CPU recipes
    predicted_share: float = 0.85  # share of each batch decoded from the world's predictions (the rest: encoded)
    episodes: int = 16  # training episodes the world predicts frame by frame, once (one world step per frame)

    def __post_init__(self) -> None:
        _require(0.0 <= self.predicted_share <= 1.0, "decoder.predicted_share", "must be in [0, 1]")
        _require(self.episodes >= 1, "decoder.episodes", f"must be >= 1, got {self.episodes}")


@dataclasses.dataclass(frozen=True, slots=True)
class RewardConfig:
    """Reward and episode-end model (``models/reward.py``): a small CNN over the latents of the last frames."""

    frames: int = 4  # latent frames it reads, the newest (the one the action produced) included
    width: int = 32  # channels of its first convolution (the second has twice as many)
    augment_noise: float = 0.3  # training: latents noised at a level drawn in [0, this], as generated frames are
    balance: float = 0.5  # training: class weights (1 / frequency) ** balance; 0 plain cross-entropy, 1 balanced
    lag: int = 0  # frames after the outcome's frame it reads too; a world reports the reward this many steps late

    def __post_init__(self) -> None:
        _require(self.frames >= 2, "reward.frames", f"must be >= 2 (the newest and one before), got {self.frames}")
        _require(
            0 <= self.lag <= self.frames - 2,
            "reward.lag",
            f"must be in [0, reward.frames - 2] = [0, {self.frames - 2}] (the window holds the frame before the "
            f"outcome's, the outcome's, and the lag's), got {self.lag}",
        )
        _require(self.width >= 1, "reward.width", f"must be >= 1, got {self.width}")
        _require(0.0 <= self.augment_noise < 1.0, "reward.augment_noise", "must be in [0, 1)")
        _require(0.0 <= self.balance <= 1.0, "reward.balance", f"must be in [0, 1], got {self.balance}")


@dataclasses.dataclass(frozen=True, slots=True)
class RateConfig:
    """The rate model (``models/reward.py``, ``RateModel``): the expected reward of each step, read from the frames
    a few steps before it and the keys pressed since, for scoring agents by their expected return."""

    enabled: bool = False  # a stage of `train world` (after reward); needs a dataset with rewards
    frames: int = 4  # latent frames it reads, the newest ``lag`` frames before the step's
    lag: int = 3  # how many frames before the step's its newest frame is
    keys: int = 24  # the keys it reads: the step's and those of the steps before it
    horizon: int = 16  # it learns the share of negative / none / positive rewards over this many steps from the step
    width: int = 64  # channels of its first convolution (the second has twice as many)
    augment_noise: float = 0.3  # training: latents noised at a level drawn in [0, this], as generated frames are
    # denoising steps per frame of the world's rollouts that `eval-agents` scores with this model (0: the world's own);
    # set where they were chosen, on validation starts, for the reading that ranks agents
    sampling_steps: int = 0
    guidance: float = 0.0  # the guidance scale of those rollouts (0: the world's own), chosen the same way
    # more datasets of the same game to train on (for example broader play than the world's own dataset)
    extra_datasets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(self.frames >= 2, "rate.frames", f"must be >= 2, got {self.frames}")
        _require(self.lag >= 0, "rate.lag", f"must be >= 0, got {self.lag}")
        for key in ("keys", "horizon", "width"):
            _require(getattr(self, key) >= 1, f"rate.{key}", f"must be >= 1, got {getattr(self, key)}")
        _require(0.0 <= self.augment_noise < 1.0, "rate.augment_noise", "must be in [0, 1)")
        _require(self.sampling_steps >= 0, "rate.sampling_steps", f"must be >= 0, got {self.sampling_steps}")
        _require(self.guidance >= 0.0, "rate.guidance", f"must be >= 0 (0: the world's own), got {self.guidance}")

    @property
    def history(self) -> int:
        """Frames before a step's that the model needs: its frames and keys both fit in them."""
        return max(self.lag + self.frames - 1, self.keys - 1)


@dataclasses.dataclass(frozen=True, slots=True)
class IdmConfig:
    """Inverse-dynamics model (``models/idm.py``): which action turned frame t into frame t + 1, from pixels."""

    before: int = 2  # frames before t it reads (t - before ... t + 1: before + 2 frames)
    channels: tuple[int, ...] = (32, 64, 128)  # width of each stride-2 convolution
    hidden: int = 256  # width of the MLP over the flattened features

    def __post_init__(self) -> None:
        _require(self.before >= 0, "idm.before", f"must be >= 0, got {self.before}")
        _require(len(self.channels) >= 1, "idm.channels", "needs at least one convolution")
        _require(all(c >= 1 for c in self.channels), "idm.channels", f"must be positive, got {self.channels}")
        _require(self.hidden >= 1, "idm.hidden", f"must be >= 1, got {self.hidden}")

    @property
    def frames(self) -> int:
        return self.before + 2


# the DynamicsConfig keys that say how a trained world samples, not what it learns: free to change after training
SAMPLING_KEYS = frozenset({"sampling_steps", "sampling_context_noise", "guidance"})
# the DynamicsConfig keys a trained run may resume with changed: switches of the objective that fine-tune a world
FINE_TUNE_KEYS = frozenset({"own_context_prob"})
# keys that switch a stage on or off in `train world`: a run resumes whatever they say
STAGE_SWITCHES = frozenset({"enabled"})


@dataclasses.dataclass(frozen=True, slots=True)
class TrainConfig:
    """One stage's run of the shared training loop: batch, optimiser, schedule, EMA, logs, checkpoints.

    A config has one per stage: ``[train_autoencoder]``, ``[train_dynamics]``, ``[train_reward]``, ``[train_rate]``,
    ``[train_decoder]`` and ``[train_idm]``.
    """

    batch_size: int = 32  # per step, over all processes: frames (autoencoder) or sequences (dynamics)
    steps: int = 10_000
    lr: float = 1e-3  # peak learning rate (AdamW), reached after warmup, then cosine decay
    warmup: int = 200
    end_lr_fraction: float = 0.05  # final learning rate as a fraction of the peak
    weight_decay: float = 1e-4
    clip_norm: float = 1.0  # global gradient norm clip
    ema_decay: float = 0.999  # EMA of the weights; the EMA weights are what ships
    log_every: int = 50
    eval_every: int = 500
    eval_batches: int = 8
    checkpoint_every: int = 500
    keep: int = 3  # latest checkpoints kept (the best one is kept as well)
    seed: int = 0
    runs_dir: str = "runs"  # outputs go to <runs_dir>/<name>
    # dynamics only: the first ``early_window_steps`` steps train on the first ``early_window`` frames of each
    # window (cheaper steps), the rest on the whole window; 0 trains on the whole window throughout
    early_window: int = 0
    early_window_steps: int = 0

    def __post_init__(self) -> None:
        for key in ("batch_size", "steps", "log_every", "eval_every", "eval_batches", "checkpoint_every", "keep"):
            _require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("early_window", "early_window_steps"):
            _require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        _require(
            self.early_window_steps <= self.steps,
            "early_window_steps",
            f"must be at most steps ({self.steps}), got {self.early_window_steps}",
        )
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(0 <= self.warmup < self.steps, "warmup", f"must be in [0, steps), got {self.warmup}")
        _require(0.0 <= self.end_lr_fraction <= 1.0, "end_lr_fraction", "must be in [0, 1]")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _require(self.clip_norm > 0, "clip_norm", "must be > 0")
        _require(0.0 <= self.ema_decay < 1.0, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """A whole run: one field per part."""

    name: str = "run"  # run name; outputs go to <train.runs_dir>/<name>
    data: DataConfig = DataConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    dynamics: DynamicsConfig = DynamicsConfig()
    train_autoencoder: TrainConfig = TrainConfig()
    train_dynamics: TrainConfig = TrainConfig()
    reward: RewardConfig = RewardConfig()
    # sized for the 2-core CPU: about 10 minutes on Boxing (docs/training.md)
    train_reward: TrainConfig = TrainConfig(
        batch_size=128,
        steps=3000,
        lr=2e-3,
        warmup=100,
        ema_decay=0.99,
        eval_every=1000,
        eval_batches=4,
        checkpoint_every=1000,
    )
    rate: RateConfig = RateConfig()
    # 10,000 steps of batch 32: about 3.5 minutes on Boxing on the 2-core CPU; ranked the Boxing agents better on
    # the validation starts than 3,000 steps of batch 128 (docs/agents.md)
    train_rate: TrainConfig = TrainConfig()
    decoder: DecoderConfig = DecoderConfig()
    # 3,000 steps: about 6 minutes on the 2-core CPU for a 64x64 world (docs/training.md)
    train_decoder: TrainConfig = TrainConfig(
        batch_size=32,
        steps=3000,
        lr=1e-3,
        warmup=100,
        ema_decay=0.99,
        eval_every=500,
        eval_batches=4,
        checkpoint_every=500,
    )
    idm: IdmConfig = IdmConfig()
    # sized for the 2-core CPU: about 15 minutes on Boxing (docs/idm.md)
    train_idm: TrainConfig = TrainConfig(
        batch_size=64,
        steps=3000,
        lr=1e-3,
        warmup=100,
        ema_decay=0.99,
        eval_every=500,
        eval_batches=8,
        checkpoint_every=500,
    )

    def __post_init__(self) -> None:
        _require(
            bool(self.name) and "/" not in self.name, "name", f"must be a non-empty name without '/', got {self.name!r}"
        )
        early = self.train_dynamics.early_window
        _require(
            early == 0 or 2 <= early < self.dynamics.window,
            "train_dynamics.early_window",
            f"must be 0 (off) or from 2 to dynamics.window - 1 ({self.dynamics.window - 1}), got {early}",
        )
        for section in ("train_autoencoder", "train_reward", "train_rate", "train_decoder", "train_idm"):
            _require(
                getattr(self, section).early_window == 0,
                f"{section}.early_window",
                "only the dynamics stage trains on windows of frames: set train_dynamics.early_window instead",
            )


# ---------------------------------------------------------------------------
# Building dataclasses from plain mappings
# ---------------------------------------------------------------------------


def _convert(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table of {typ.__name__} settings, got {value!r}")
        return _build(typ, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value, strict=True)))
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"config field {key} has unsupported type {typ!r}")


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    fields = set(defaults)
    kwargs = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in fields:
            close = difflib.get_close_matches(k, sorted(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = f"[{prefix}]" if prefix else "the top level"
            raise ConfigError(f"{key}: unknown key{hint} (keys in {where}: {', '.join(sorted(fields))})")
        if isinstance(v, Mapping) and dataclasses.is_dataclass(defaults[k]):
            # a section given in part keeps the rest of its default here (train_reward's batch of 128, say),
            # not the defaults of its class
            v = {**config_to_dict(defaults[k]), **v}
        kwargs[k] = _convert(v, hints[k], key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not str(e).startswith(prefix):
            raise ConfigError(f"{prefix}.{e}") from None
        raise


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train_dynamics.batch_size=8")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string: --set name=boxing
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as TOML, else taken as strings)."""
    out = _deepcopy(values)
    for item in overrides:
        path, value = _parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a table")
            node = child
        node[path[-1]] = value
    return out


def _deepcopy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def config_from_dict(values: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    return _build(Config, apply_overrides(dict(values), overrides))


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Load a TOML config, apply ``--set`` overrides and validate everything.

    Errors name the file and the key: ``configs/toy.toml: dynamics.window: must be >= 2, got 0``.
    """
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (see configs/ for examples)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    try:
        return config_from_dict(values, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(cfg)


def part_from_dict(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """One part's dataclass (e.g. a checkpoint's stored ``autoencoder`` settings), validated."""
    return _build(cls, values, prefix)
