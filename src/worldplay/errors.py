"""User-facing errors.

Every error that a user can cause (a bad file, a bad flag, a bad config value)
is raised as a :class:`WorldplayError` whose message says what was wrong, where
(file, line, key) and what to do. The command line prints the message without a
traceback and exits with status 2.
"""

from __future__ import annotations


class WorldplayError(Exception):
    """An error caused by input: the message is meant for the user."""


class ConfigError(WorldplayError, ValueError):
    """A config file or a ``--set`` override is invalid."""


class DatasetError(WorldplayError):
    """A dataset is missing, malformed or corrupt, or a write was refused."""


class ImportInputError(WorldplayError):
    """Video files or action logs cannot be imported."""
