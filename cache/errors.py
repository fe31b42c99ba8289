"""The project's one error hierarchy.

Every error a user can cause derives from :class:`BddnError`, and also from the
built-in exception a caller would naturally catch (``ValueError``,
``FileNotFoundError``...). The CLI prints the message of any ``BddnError`` as a
single line and exits non-zero; anything else is a bug and keeps its traceback.
Messages name the file or value, what is allowed, and the fix.
"""

from __future__ import annotations


class BddnError(Exception):
    """Base class of every error caused by input, configuration or environment."""


class InvalidInputError(BddnError, ValueError):
    """A file, array or option has a value the project cannot use."""


class MissingInputError(BddnError, FileNotFoundError):
    """A file or folder the request needs does not exist."""


class StoreMismatchError(BddnError, ValueError):
    """An existing feature store was built with different provenance than requested."""


class IncompleteStoreError(BddnError, RuntimeError):
    """A feature store lacks chunks or images that the request needs."""


class DamagedStoreError(BddnError, RuntimeError):
    """A chunk of a feature store cannot be decoded (truncated, altered, failed its checksum) or is missing."""


class WeightsUnavailableError(BddnError, RuntimeError):
    """Model weights are neither cached locally nor downloadable."""


class ConfigError(BddnError, ValueError):
    """A configuration key is unknown or has the wrong type."""


class LockedError(BddnError, RuntimeError):
    """Another run holds the lock of the store or fit this run would write (``cache.lock``)."""
