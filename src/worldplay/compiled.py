"""`hot_jit`: `jax.jit` for the programs that run many times (a world's per-frame programs, a training step, the
encoding of a dataset), with XLA options of their own.

The options are `HOT_OPTIONS`, None by default: the process's own (`XLA_FLAGS`) decide, as for every other
program. A process that compiles everything else cheaply (the test suite lowers XLA's optimisation for its
hundreds of programs that run once) sets them with `hot_options` where it runs one of these many times. A
world's per-frame programs are made with `world_options`: those, or else level 2 on the CPU where `XLA_FLAGS`
leave the level to XLA.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax

HOT_OPTIONS: dict[str, Any] | None = None
# A world's per-frame programs on the CPU, where nothing else is asked for: LLVM at level 2 instead of XLA's
# default 3 compiles them about a third faster for the same frames per second (docs/performance.md)
WORLD_CPU_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 2}


def hot_jit(fn: Callable, **kwargs: Any) -> Any:
    """``jax.jit(fn, **kwargs)`` compiled with `HOT_OPTIONS` (read now, when the program is made)."""
    return jax.jit(fn, compiler_options=HOT_OPTIONS, **kwargs)


def hot_key() -> tuple | None:
    """`HOT_OPTIONS` as a hashable key: programs cached by it are made again under other options."""
    return None if HOT_OPTIONS is None else tuple(sorted(HOT_OPTIONS.items()))


@contextlib.contextmanager
def hot_options(options: dict[str, Any] | None) -> Iterator[None]:
    """Make `hot_jit` programs with ``options`` inside the block, with the previous options after it."""
    global HOT_OPTIONS
    previous, HOT_OPTIONS = HOT_OPTIONS, options
    try:
        yield
    finally:
        HOT_OPTIONS = previous


def world_options() -> dict[str, Any] | None:
    """The options a world's per-frame programs are made with: `HOT_OPTIONS` where a process set them; else, on
    the CPU and where ``XLA_FLAGS`` leave the optimisation level to XLA, `WORLD_CPU_OPTIONS`; else none."""
    if HOT_OPTIONS is not None:
        return HOT_OPTIONS
    if jax.default_backend() == "cpu" and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        return WORLD_CPU_OPTIONS
    return None
