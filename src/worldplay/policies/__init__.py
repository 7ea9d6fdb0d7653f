"""Policies: what picks an action from a frame, for recording, rollouts and evaluation.

A policy is any object with ``reset(seed)`` and ``__call__(frame uint8 [H, W, 3]) -> action index``, or a
user's ``pkg.module:function`` (frame -> action index or name). On the command line: ``random``, ``sticky``,
``human`` (a person at the keyboard, ``worldplay.policies.human``) or ``pkg.module:function``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from worldplay.errors import WorldplayError


class Policy(Protocol):
    name: str

    def reset(self, seed: int) -> None: ...
    def __call__(self, frame: np.ndarray) -> int: ...


class RandomPolicy:
    """A uniformly random action every frame."""

    name = "random"

    def __init__(self, num_actions: int):
        self.num_actions = num_actions
        self.reset(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 1])

    def __call__(self, frame: np.ndarray) -> int:
        return int(self._rng.integers(self.num_actions))


class StickyPolicy:
    """A random action held for a random 1 to ``max_repeat`` frames (uniform), for coherent motion."""

    name = "sticky"

    def __init__(self, num_actions: int, max_repeat: int = 15):
        self.num_actions = num_actions
        self.max_repeat = max_repeat
        self.reset(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 2])
        self._left = 0
        self._action = 0

    def __call__(self, frame: np.ndarray) -> int:
        if self._left == 0:
            self._action = int(self._rng.integers(self.num_actions))
            self._left = int(self._rng.integers(1, self.max_repeat + 1))
        self._left -= 1
        return self._action


class HoldPolicy(StickyPolicy):
    """A random action held for a random 1 to 120 frames: broader play than ``sticky`` (a player that walks
    across the screen, or stays put and punches for seconds), for recording data that a rate model needs to
    tell good play from bad (docs/agents.md)."""

    name = "hold"

    def __init__(self, num_actions: int, max_repeat: int = 120):
        super().__init__(num_actions, max_repeat)


def _import_beside_user(module_name: str) -> Any:
    """Import a user's policy module; one not found on ``sys.path`` is looked for in the current directory too, as
    ``python -m`` would (the ``worldplay`` command's own path does not hold it), after the installed packages."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        here = os.getcwd()
        if e.name != module_name.partition(".")[0] or here in sys.path:
            raise
        sys.path.append(here)
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


class FunctionPolicy:
    """A user's ``pkg.module:function``: called with the frame, returns an action index or name.

    The attribute may be a function, or a class whose instances are such callables (built with no
    arguments, one per policy, so that state is not shared between streams); ``reset(seed)`` is called at
    the start of every episode where it exists.
    """

    def __init__(self, spec: str, action_names: Sequence[str]):
        self.name = spec
        self.action_names = tuple(action_names)
        module_name, _, attr = spec.partition(":")
        try:
            module = _import_beside_user(module_name)
        except ImportError as e:
            raise WorldplayError(
                f"--policy {spec}: cannot import module {module_name!r} ({e}); put it in the current directory or "
                "on PYTHONPATH"
            ) from e
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise WorldplayError(f"--policy {spec}: module {module_name!r} has no callable {attr!r}")
        if isinstance(fn, type):  # a class: each policy (each stream) gets its own instance, with its own state
            try:
                fn = fn()
            except TypeError as e:
                raise WorldplayError(f"--policy {spec}: a policy class must take no arguments ({e})") from None
        self._fn: Callable[[np.ndarray], Any] = fn

    def reset(self, seed: int) -> None:
        reset = getattr(self._fn, "reset", None)
        if callable(reset):
            reset(seed)

    def __call__(self, frame: np.ndarray) -> int:
        a = self._fn(frame)
        if isinstance(a, str):
            if a not in self.action_names:
                raise WorldplayError(
                    f"--policy {self.name} returned unknown action {a!r}; actions: {', '.join(self.action_names)}"
                )
            return self.action_names.index(a)
        try:
            i = int(a)
        except (TypeError, ValueError):
            raise WorldplayError(f"--policy {self.name} returned {a!r}, not an action index or name") from None
        if not 0 <= i < len(self.action_names):
            raise WorldplayError(
                f"--policy {self.name} returned action {i}, out of range [0, {len(self.action_names)})"
            )
        return i


def make_policy(spec: str, action_names: Sequence[str], *, fps: float = 15.0) -> Policy:
    """Build a policy from its command-line name."""
    if spec == "random":
        return RandomPolicy(len(action_names))
    if spec == "sticky":
        return StickyPolicy(len(action_names))
    if spec == "hold":
        return HoldPolicy(len(action_names))
    if spec == "human":
        from worldplay.policies.human import HumanPolicy

        return HumanPolicy(action_names, fps=fps)
    if ":" in spec:
        return FunctionPolicy(spec, action_names)
    raise WorldplayError(f"--policy {spec!r}: unknown policy; use random, sticky, hold, human or pkg.module:function")
