"""Issue 11 item 9: every S3 retry leaves a warning (operation, error class, attempt).

botocore retries connection errors and 5xx itself and logged that only at DEBUG, so a
16 s outage during a build left no line at all."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from som import storage


@pytest.fixture(autouse=True)
def _fresh_filesystems():
    storage.clear_filesystems()
    yield
    storage.clear_filesystems()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "som.storage.retry_logging" and r.levelno == logging.WARNING and " attempt " in r.getMessage()
    ]


def test_each_retry_against_a_closed_port_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    options = {
        "endpoint_url": f"http://127.0.0.1:{_closed_port()}",
        "key": "k",
        "secret": "s",
        "region": "us-east-1",
        "config_kwargs": {"retries": {"total_max_attempts": 3}},
    }
    with pytest.raises(Exception) as info:
        storage.read_bytes("s3://bucket/missing.bin", options)
    assert storage.is_transient(info.value)
    warnings = _retry_warnings(caplog)
    assert len(warnings) == 3, warnings
    for attempt, message in enumerate(warnings, start=1):
        assert message.startswith(f"S3 HeadObject attempt {attempt}/3 failed (EndpointConnectionError"), message
    assert warnings[0].endswith("; retrying") and warnings[-1].endswith("; giving up")
    assert "secret" not in caplog.text.replace("s3://", "")


def test_a_brief_outage_is_survived_and_logged(
    seaweed_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stop a real SeaweedFS, restart it on the same port a few seconds later: the read
    waits it out through botocore's retries, and each failed attempt is a warning."""
    caplog.set_level(logging.WARNING)
    server = seaweed_factory(tmp_path / "weed")
    options = {**server.storage_options, "config_kwargs": {"retries": {"total_max_attempts": 10}}}
    url = server.url("outage", "obj.bin")
    storage.write_bytes_atomic(url, b"before the outage", options)
    server.stop()
    port = server.port

    def restart() -> None:
        time.sleep(3)
        server.start(port=port)

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        assert storage.read_bytes(url, options) == b"before the outage"
    finally:
        thread.join()
    warnings = _retry_warnings(caplog)
    assert warnings, "an outage survived by retries left no warning"
    assert all("failed (" in w and w.endswith("; retrying") for w in warnings), warnings


def test_retries_inside_s3fs_are_warnings_too(
    seaweed_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen server (SIGSTOP: connections open, no answers) gives read timeouts, which
    botocore (one attempt here) hands to s3fs, which retries them itself and used to say so
    only at DEBUG. Each of its attempts is now a warning naming the operation, the error
    class and the attempt; the read succeeds once the server is thawed."""
    caplog.set_level(logging.WARNING)
    server = seaweed_factory(tmp_path / "weed")
    options = {
        **server.storage_options,
        "config_kwargs": {"read_timeout": 1, "connect_timeout": 1, "retries": {"total_max_attempts": 1}},
    }
    url = server.url("frozen", "obj.bin")
    storage.write_bytes_atomic(url, b"before the freeze", options)
    os.kill(server.pid, signal.SIGSTOP)
    thaw = threading.Timer(2.5, os.kill, (server.pid, signal.SIGCONT))
    thaw.start()
    try:
        assert storage.read_bytes(url, options) == b"before the freeze"
    finally:
        thaw.cancel()
        os.kill(server.pid, signal.SIGCONT)
    inside = [r.getMessage() for r in caplog.records if r.name == "s3fs" and r.levelno == logging.WARNING]
    assert inside, f"no s3fs retry was a warning: {caplog.text}"
    assert inside[0].startswith("S3 head_object attempt 1/5 failed inside s3fs (ReadTimeoutError: "), inside
    assert all(w.endswith("; retrying") for w in inside), inside
    assert not [r for r in caplog.records if r.name == "s3fs" and r.levelno < logging.WARNING], (
        "s3fs's other debug records stay hidden"
    )
