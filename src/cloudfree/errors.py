"""One error hierarchy for cloudfree.

On AWS the exception class name becomes the Step Functions error name. Which names are retried
(and how) and which are caught is decided in one table, ``cloudfree.retry.TABLE``, from which the
state machine's Retry blocks are rendered. MiniStack reports every handler error as
``Runtime.HandlerError``, so the table also carries a small retry for that name.
"""

from __future__ import annotations


class CloudfreeError(Exception):
    """Base class of every error cloudfree raises on purpose."""


class InputError(CloudfreeError, ValueError):
    """The caller asked for something malformed (bad tile id, year, AOI, options, request)."""


class ConfigError(CloudfreeError):
    """A required setting (environment variable) is missing or invalid."""


class NoScenesError(CloudfreeError):
    """A tile has no usable scene for the requested year and filters (an *empty* tile)."""


class TransientError(CloudfreeError):
    """Worth retrying: throttling, timeouts, 5xx from S3 or the STAC API."""


class SourceReadError(TransientError):
    """Reading a source COG failed in a way that may succeed on retry.

    ``failures`` maps each href that failed to its message, when a stack read knows them (the
    composite then excludes those scenes for the band instead of failing the tile).
    """

    def __init__(self, message: str, failures: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failures: dict[str, str] = dict(failures or {})


class StacApiError(TransientError):
    """The STAC API failed or timed out."""


class UnreadableSourceError(CloudfreeError):
    """Every selected scene of a band is unreadable: the tile cannot be composited (not
    transient: missing and corrupt assets were excluded one scene-band at a time first)."""


class IncompleteError(CloudfreeError):
    """A step found its inputs incomplete (e.g. a window result missing when assembling)."""


class ValidationError(CloudfreeError):
    """An output failed validation (COG or STAC) and was not published."""


class CorruptObjectError(CloudfreeError):
    """An object cloudfree wrote earlier (manifest, stats, marker) cannot be parsed."""


class ServiceDownError(CloudfreeError):
    """A local service (MiniStack, PostgreSQL, STAC API) is not reachable."""


#: Error names the state machine retries with backoff (besides the AWS ones).
TRANSIENT_ERRORS = ("TransientError", "SourceReadError", "StacApiError")
