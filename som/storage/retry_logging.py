"""Warnings for every storage retry, from botocore and from s3fs.

botocore retries connection errors, 5xx and throttling itself and logs that only at DEBUG;
s3fs then retries some errors again (read timeouts, dropped connections, truncated bodies)
and also says so only at DEBUG. An outage could therefore pass for seconds without a line.
`log_botocore_retries` hooks botocore's `needs-retry` event; `log_s3fs_retries` lets s3fs's
own retry records through as warnings, with the operation, error class and attempt (s3fs has
no hook; its debug record, made inside its retry loop, is the one signal).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

from fsspec.spec import AbstractFileSystem

from som.storage.errors import TRANSIENT_CODES

log = logging.getLogger(__name__)

S3FS_LOGGER = "s3fs"
RETRY_RECORD = "Retryable error"  # s3fs.core._error_wrapper's debug line before each retry
_INSTALLED = threading.Lock()


class S3fsRetryWarnings(logging.Filter):
    """A filter for the `s3fs` logger (whose level it lowers to DEBUG so that s3fs makes the
    retry records): retry records become warnings, others pass only at or above `floor`
    (None: the level the logger inherits, as if it had been left alone)."""

    def __init__(self, floor: int | None) -> None:
        super().__init__()
        self.floor = floor

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.DEBUG and str(record.msg).startswith(RETRY_RECORD) and self._promote(record):
            return True
        logger = logging.getLogger(S3FS_LOGGER)
        floor = self.floor if self.floor is not None else (logger.parent or logger).getEffectiveLevel()
        return record.levelno >= floor

    @staticmethod
    def _promote(record: logging.LogRecord) -> bool:
        """Rewrite the record as a warning; False when it does not come from s3fs's retry loop."""
        error = record.args[0] if isinstance(record.args, tuple) and record.args else None
        loop = _retry_loop(sys._getframe())
        if loop is None:
            return False  # not from the retry loop this module knows: left as it is
        attempt, retries, operation = loop
        action = "retrying" if attempt < retries else "giving up"
        record.msg = "S3 %s attempt %d/%d failed inside s3fs (%s: %s); %s"
        record.args = (operation, attempt, retries, type(error).__name__, error, action)
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def _retry_loop(frame: FrameType | None) -> tuple[int, int, str] | None:
    """(attempt, attempts allowed, operation) of the s3fs retry loop on the stack, if any."""
    while frame is not None:
        if frame.f_code.co_name == "_error_wrapper" and frame.f_globals.get("__name__") == "s3fs.core":
            names = frame.f_locals
            func = names.get("func")
            operation = getattr(func, "__name__", "request")
            if operation.startswith("_") and frame.f_back is not None:  # a closure: name its caller
                operation = frame.f_back.f_code.co_name.lstrip("_")
            return int(names.get("i", 0)) + 1, int(names.get("retries", 0)), operation
        frame = frame.f_back
    return None


def log_s3fs_retries() -> None:
    """Install the filter on the `s3fs` logger once per process."""
    with _INSTALLED:
        logger = logging.getLogger(S3FS_LOGGER)
        if any(isinstance(f, S3fsRetryWarnings) for f in logger.filters):
            return
        logger.addFilter(S3fsRetryWarnings(logger.level or None))
        logger.setLevel(logging.DEBUG)


def _max_attempts(config_kwargs: Mapping[str, Any]) -> int:
    """botocore's attempts per request (first try included) for these Config kwargs."""
    retries = dict(config_kwargs.get("retries") or {})
    if retries.get("total_max_attempts"):
        return int(retries["total_max_attempts"])
    if retries.get("max_attempts") is not None:
        return int(retries["max_attempts"]) + 1
    if os.environ.get("AWS_MAX_ATTEMPTS", "").isdigit():
        return int(os.environ["AWS_MAX_ATTEMPTS"])
    mode = retries.get("mode") or os.environ.get("AWS_RETRY_MODE") or "legacy"
    return 5 if mode == "legacy" else 3


class _RetryLogger:
    """A botocore `needs-retry` hook that logs each failed S3 attempt as a warning.

    botocore retries connection errors, 5xx and throttling itself (5 attempts, up to ~15 s of
    back-off in legacy mode) and logs that only at DEBUG, so an outage of that length passed
    without a line. The hook only observes: it returns None and leaves the decision to
    botocore's own handler."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts

    def __call__(
        self, attempts: int = 0, operation: Any = None, caught_exception: Any = None, response: Any = None, **_: Any
    ) -> None:
        if caught_exception is not None:
            error = f"{type(caught_exception).__name__}: {caught_exception}"
        else:
            status, code = _response_status(response)
            if not (status >= 500 or status == 429 or code in TRANSIENT_CODES):
                return None
            error = f"HTTP {status}" + (f" {code}" if code else "")
        name = getattr(operation, "name", None) or "request"
        action = "retrying" if attempts < self.max_attempts else "giving up"
        log.warning("S3 %s attempt %d/%d failed (%s); %s", name, attempts, self.max_attempts, error, action)
        return None


def _response_status(response: Any) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a botocore (http_response, parsed) pair."""
    if not isinstance(response, tuple) or len(response) != 2:
        return 0, ""
    http, parsed = response
    code = ((parsed or {}).get("Error") or {}).get("Code", "") if isinstance(parsed, Mapping) else ""
    return int(getattr(http, "status_code", 0) or 0), str(code or "")


def log_botocore_retries(fs: AbstractFileSystem, kwargs: Mapping[str, Any]) -> None:
    """Give an s3fs filesystem a botocore session whose clients log every retry (warning).

    The session is the one s3fs would create (same kwargs); s3fs only replaces it on a
    refresh, which would drop the logging, not change behaviour."""
    try:
        from aiobotocore.session import AioSession
    except ImportError:  # pragma: no cover - s3fs always brings aiobotocore
        return
    if getattr(fs, "session", True) is not None:
        return  # a session was given, or this s3fs has none to set
    session = AioSession(**getattr(fs, "kwargs", {}))
    session.register(
        "needs-retry.s3",
        _RetryLogger(_max_attempts(kwargs.get("config_kwargs") or {})),
        unique_id="somflow-log-s3-retries",
    )
    fs.session = session
