"""User-facing errors: one clear line naming the problem and the fix."""

from __future__ import annotations

import importlib
from types import ModuleType


class SnnexpError(Exception):
    """An error caused by the user's input or environment, printed as one line without traceback.

    The message should say what is wrong (naming the file or config key) and how to fix it.
    """


class DataError(SnnexpError):
    """A recording cannot be used (missing, unreadable, wrong format, no IMU, too short, ...)."""


class ConfigError(SnnexpError):
    """A configuration value is invalid; the message names the key and the allowed values."""


class CheckpointError(SnnexpError):
    """A checkpoint is missing, corrupted, unsafe or does not match the requested model."""


class TrainingError(SnnexpError):
    """Training cannot continue (e.g. a non-finite loss)."""


class StorageError(SnnexpError):
    """A result cannot be written (disk full, quota, permissions); the previous file is kept."""


def require(module: str, message: str) -> ModuleType:
    """Import an optional dependency, or raise ConfigError(``message``) saying how to install it
    (``{exc}`` in the message stands for the ImportError's own text)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(message.format(exc=exc)) from None
