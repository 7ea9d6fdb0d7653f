"""Checking, before any work starts, that a command can write where it was told to."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from worldplay.errors import WorldplayError


class OutputError(WorldplayError):
    """An output path cannot be written."""


def check_writable(path: str | os.PathLike[str], what: str, *, folder: bool = False) -> None:
    """Refuse, in one line, an output ``path`` (a file, or a ``folder``) that cannot be written.

    The nearest existing folder on the way must take a new file (a probe file is created and removed);
    nothing else is created. ``what`` names the output in the message ("the video", "the dataset").
    """
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise OutputError(f"{p}: cannot write {what} there: it is a file, not a folder; choose another path")
    if not folder and p.is_dir():
        raise OutputError(f"{p}: cannot write {what} there: it is a folder; give a file name")
    probe = p if folder else p.parent
    probe = probe if str(probe) else Path(".")
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{p}: cannot write {what} there: {probe} is a file, not a folder; choose another path")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".worldplay-write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise OutputError(
            f"{p}: cannot write {what} there: {probe} takes no new file ({e.strerror or e}); "
            "choose a folder you can write to"
        ) from None
