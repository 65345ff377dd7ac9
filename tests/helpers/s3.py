"""Pointing a test's process (and the worker processes it starts) at a test S3 server."""

from __future__ import annotations

from typing import Any

import pytest

from som import storage


def use_s3(monkeypatch: pytest.MonkeyPatch, server: Any) -> None:
    """Point this process, and the worker processes it starts, at `server` (an S3Server of
    tests/plugins/s3.py): its AWS_* variables, and no filesystem cached with older ones."""
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    storage.clear_filesystems()
