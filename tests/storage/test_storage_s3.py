"""som.storage against a real SeaweedFS S3 server (the session `s3_server` fixture)."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import tracemalloc
from typing import Any

import pytest
import s3fs

from som import storage

pytestmark = pytest.mark.usefixtures("s3_server")


def test_round_trip_s3(s3_server: Any, s3_prefix: str) -> None:
    opts = s3_server.storage_options
    url = storage.join(s3_prefix, "dir", "obj.bin")
    assert not storage.exists(url, opts)
    storage.write_bytes_atomic(url, b"hello s3", opts)
    assert storage.exists(url, opts)
    assert storage.read_bytes(url, opts) == b"hello s3"
    storage.write_bytes_atomic(url, b"", opts)  # overwrite, zero bytes
    assert storage.read_bytes(url, opts) == b""


def test_settings_from_env_and_from_env_file(s3_server: Any, s3_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = storage.join(s3_prefix, "env.bin")
    storage.write_bytes_atomic(url, b"via options", s3_server.storage_options)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    assert storage.read_bytes(url) == b"via options"  # AWS_* environment only
    for name in s3_server.env:
        monkeypatch.delenv(name)
    monkeypatch.setenv(storage.CONFIG_ENV_VAR, str(s3_server.env_file))
    assert storage.read_bytes(url) == b"via options"  # the infra script's s3.env


def test_wrong_credentials_rejected_clearly(s3_server: Any, s3_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_secret = "definitely-not-the-secret-0123456789"
    cases = {
        "wrong secret": {**s3_server.storage_options, "secret": wrong_secret},
        "unknown key": {**s3_server.storage_options, "key": "NOSUCHKEY0000", "secret": wrong_secret},
    }
    for case, opts in cases.items():
        with pytest.raises(storage.StorageAuthError) as info:
            storage.write_bytes_atomic(storage.join(s3_prefix, "x.bin"), b"x", opts)
        message = str(info.value)
        assert "AWS_SECRET_ACCESS_KEY" in message and "s3.env" in message, case
        assert wrong_secret not in message
        assert isinstance(info.value, PermissionError)
        assert not storage.is_transient(info.value)
        with pytest.raises(storage.StorageAuthError):
            storage.read_bytes(storage.join(s3_prefix, "x.bin"), opts)
    assert wrong_secret not in caplog.text
    assert s3_server.secret_key not in caplog.text


def test_list_images_s3(s3_server: Any, s3_prefix: str) -> None:
    opts = s3_server.storage_options
    names = ["b.jpg", "a.PNG", "nested/c.jpeg", "nested/deeper/d.webp", "notes.txt", "nested/e.json", ".hidden.jpg"]
    storage.write_many({storage.join(s3_prefix, "imgs", n): b"x" for n in names}, opts)
    storage.write_bytes_atomic(storage.join(s3_prefix, "imgs2", "sibling.jpg"), b"x", opts)
    base = storage.join(s3_prefix, "imgs")
    expected = [storage.join(base, n) for n in ["a.PNG", "b.jpg", "nested/c.jpeg", "nested/deeper/d.webp"]]
    assert storage.list_images(base, options=opts) == expected
    assert storage.list_images(base + "/", options=opts) == expected
    assert storage.list_images(base, extensions={"png"}, options=opts) == expected[:1]
    assert storage.list_images(storage.join(s3_prefix, "none"), options=opts) == []


def test_listing_and_exists_fresh_after_writes(s3_server: Any, s3_prefix: str) -> None:
    opts = s3_server.storage_options
    storage.write_bytes_atomic(storage.join(s3_prefix, "1.jpg"), b"1", opts)
    assert len(storage.list_images(s3_prefix, options=opts)) == 1
    assert not storage.exists(storage.join(s3_prefix, "2.jpg"), opts)
    # Another client (think: a Dask worker process) writes behind our back.
    other = s3fs.S3FileSystem(
        skip_instance_cache=True,
        key=s3_server.access_key,
        secret=s3_server.secret_key,
        endpoint_url=s3_server.endpoint_url,
    )
    other.pipe_file(storage.join(s3_prefix, "2.jpg").removeprefix("s3://"), b"2")
    assert len(storage.list_images(s3_prefix, options=opts)) == 2
    assert storage.exists(storage.join(s3_prefix, "2.jpg"), opts)
    # And our own writes show up at once too.
    storage.write_many({storage.join(s3_prefix, "3.jpg"): b"3"}, opts)
    assert len(storage.list_images(s3_prefix, options=opts)) == 3


def test_sha256_multi_mb_streamed(s3_server: Any, s3_prefix: str) -> None:
    opts = s3_server.storage_options
    data = os.urandom(12 * 2**20 + 123)
    expected = hashlib.sha256(data).hexdigest()
    url = storage.join(s3_prefix, "big.bin")
    storage.write_bytes_atomic(url, data, opts)
    del data
    tracemalloc.start()
    try:
        digest = storage.sha256_of(url, opts, chunk_size=2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == expected
    assert peak < 6 * 2**20, f"hashing a 12 MB object peaked at {peak / 2**20:.1f} MB"


def test_write_many_s3(s3_server: Any, s3_prefix: str) -> None:
    opts = s3_server.storage_options
    items = {
        storage.join(s3_prefix, storage.content_key(hashlib.sha256(bytes([i])).hexdigest(), "json")): bytes([i])
        * (1000 + i)
        for i in range(60)
    }
    assert storage.write_many(items, opts) == 60
    for url, data in items.items():
        assert storage.read_bytes(url, opts) == data
    listed = storage.list_images(storage.join(s3_prefix, "marks"), extensions=["json"], options=opts)
    assert listed == sorted(items)


def _child_round_trip(url: str, opts: dict[str, Any], queue: Any) -> None:
    try:
        storage.write_bytes_atomic(url, b"from the child " + str(os.getpid()).encode(), opts)
        queue.put(
            (
                "ok",
                storage.read_bytes(url, opts).decode(),
                len(storage.list_images(url.rsplit("/", 1)[0], extensions=["bin"], options=opts)),
            )
        )
    except BaseException as exc:  # report, never hang the parent
        queue.put(("error", repr(exc), 0))
    # Leave without the interpreter's exit handlers: a test session's process has inherited
    # handlers of its own (Prefect, Dask) that are not what this test is about.
    queue.close()
    queue.join_thread()
    os._exit(0)


def test_filesystem_works_in_forked_child(s3_server: Any, s3_prefix: str) -> None:
    """The parent has a live s3fs (event loop thread, open connections); a forked child
    must still be able to use the storage functions, and the parent afterwards."""
    opts = s3_server.storage_options
    storage.write_bytes_atomic(storage.join(s3_prefix, "parent.bin"), b"parent", opts)
    parent_fs, _ = storage.resolve(s3_prefix, opts)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [
        ctx.Process(target=_child_round_trip, args=(storage.join(s3_prefix, f"child{i}.bin"), opts, queue))
        for i in range(2)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert all(status == "ok" for status, _, _ in results), results
    assert all(text.startswith("from the child") for _, text, _ in results)
    assert storage.resolve(s3_prefix, opts)[0] is parent_fs  # parent keeps its own
    assert storage.read_bytes(storage.join(s3_prefix, "parent.bin"), opts) == b"parent"
    assert len(storage.list_images(s3_prefix, extensions=["bin"], options=opts)) == 3
