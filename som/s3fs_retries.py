"""Warnings for the retries s3fs makes on its own, above botocore's.

botocore's retries are logged by som.storage's `needs-retry` hook. s3fs then retries some
errors again itself (read timeouts, dropped connections, truncated bodies: up to
`retries` times, with back-off), and says so only at DEBUG ("Retryable error: ..."), so a
server that hangs or drops connections could be retried for seconds without a line. s3fs
has no hook for it; its debug record is the one signal. This module lets exactly those
records through as warnings, with the operation, the error class and the attempt (read from
s3fs's retry loop, which is on the stack when the record is made), and keeps every other
s3fs record at the level s3fs would have had.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import FrameType

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
