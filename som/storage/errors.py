"""The errors storage raises, and which errors are worth retrying.

`is_transient` decides whether a later attempt may succeed; Prefect tasks retry only then
(tasks/retries.py). The S3 error codes it counts as transient (`TRANSIENT_CODES`) are also the
ones `retry_logging` warns about, so "worth a retry" means the same thing in both places.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Mapping
from functools import lru_cache


class StorageError(Exception):
    """Base of the errors this module raises itself."""


class StorageConfigError(StorageError, ValueError):
    """A storage config file or option that cannot be used; the message names it."""


class StorageAuthError(StorageError, PermissionError):
    """S3 refused the credentials or the permission (subclass of PermissionError)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object changed (or appeared) since the caller read it."""


_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EAGAIN,
    }
)
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
)
_TRANSIENT_TEXT = ("SlowDown", "reduce your request rate", "ServiceUnavailable", "Service Unavailable", "InternalError")
_PERMANENT = (
    PermissionError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    StorageConfigError,
    ValueError,
    TypeError,
)


@lru_cache(maxsize=1)
def _transient_classes() -> tuple[type[BaseException], ...]:
    """Network error classes of the optional S3 stack, imported only when classifying."""
    classes: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from botocore import exceptions as be

        classes += [be.HTTPClientError, be.ConnectionError]
    with contextlib.suppress(ImportError):
        import aiohttp

        classes += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    with contextlib.suppress(ImportError):
        from urllib3.exceptions import IncompleteRead, ProtocolError

        classes += [IncompleteRead, ProtocolError]
    return tuple(classes)


def _client_error_is_transient(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return False
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return error.get("Code") in TRANSIENT_CODES or int(status) >= 500 or int(status) == 429


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):  # refused, reset, broken pipe, ...
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    if isinstance(exc, _transient_classes()):
        return True
    if _client_error_is_transient(exc):
        return True
    return any(text in str(exc) for text in _TRANSIENT_TEXT)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation later may succeed: connection refused or reset,
    timeouts, HTTP 5xx / 429, S3 SlowDown and throttling. Wrong credentials, missing objects
    and bad arguments are permanent. The whole cause/context chain is examined because s3fs
    wraps botocore errors (which wrap aiohttp and socket errors) in plain OSErrors."""
    if isinstance(exc, _PERMANENT):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _one_is_transient(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def is_precondition_failure(exc: BaseException) -> bool:
    """s3fs turns HTTP 412 (and AWS's 409 ConditionalRequestConflict) into a bare OSError;
    the botocore error underneath says which it was."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return True
        if "pre-condition" in str(current) or "PreconditionFailed" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False
