"""The one error policy: expected failures are `FmnistError`s, printed as one line with the fix.

Anything else that escapes a stage or the CLI is a bug and keeps its traceback. Each subclass names
what went wrong in the user's world (their params, their data, their machine, their tracking store),
so the entry point can catch exactly these and nothing that hides a programming error.
"""

from __future__ import annotations


class FmnistError(Exception):
    """An expected failure: the message says what is wrong and how to fix it, in one line."""


class ConfigError(FmnistError):
    """params.yaml (or an override) holds a value the pipeline cannot run with."""


class DataError(FmnistError):
    """Input data is missing, corrupt, or not what the pipeline expects."""


class DeviceError(FmnistError):
    """The requested device (or precision on it) is not available on this machine."""


class WeightsError(FmnistError):
    """Pretrained weights are missing and cannot be fetched."""


class StoreError(FmnistError):
    """The tracking store does not hold what a stage output points at, or cannot be reached."""


class OutputError(FmnistError):
    """A stage output (checkpoint, pointer file, metrics) is missing, unreadable or inconsistent."""


class UnknownModelError(ConfigError):
    """An architecture name that is not registered."""


class Terminated(BaseException):
    """SIGTERM arrived; raised (like KeyboardInterrupt, not an Exception) so runs close as KILLED."""
