"""`hot_jit`: `jax.jit` for the programs that run many times (a world's per-frame programs, a training step, the
encoding of a dataset), with XLA options of their own.

The options are `HOT_OPTIONS`, None by default: the process's own (`XLA_FLAGS`) decide, as for every other
program. A process that compiles everything else cheaply (the test suite lowers XLA's optimisation for its
hundreds of programs that run once) sets them with `hot_options` where it runs one of these many times.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax

HOT_OPTIONS: dict[str, Any] | None = None


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
