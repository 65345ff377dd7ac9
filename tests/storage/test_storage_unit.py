"""som.storage logic on memory:// and local files (no server needed)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
import tracemalloc
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from som import storage

SECRET = "s3cr3t-VALUE-that-must-never-be-logged"


@pytest.fixture
def mem_prefix() -> str:
    return f"memory://unit-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("s3://bucket", ("a", "b.jpg"), "s3://bucket/a/b.jpg"),
        ("s3://bucket/pre/", ("/x/",), "s3://bucket/pre/x"),
        ("memory://", ("x",), "memory://x"),
        ("file:///", ("tmp", "a"), "file:///tmp/a"),
        ("/", ("a",), "/a"),
        ("/data/imgs", ("", "c.png"), "/data/imgs/c.png"),
        ("rel/dir/", ("x",), "rel/dir/x"),
        ("s3://bucket/p", (), "s3://bucket/p"),
    ],
)
def test_join(base: str, parts: tuple[str, ...], expected: str) -> None:
    assert storage.join(base, *parts) == expected


def test_join_refuses_parent_references() -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        storage.join("s3://bucket/a", "../b")


def test_content_key() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert storage.content_key(digest, "jpg") == f"marks/{digest}.jpg"
    assert storage.content_key(digest, ".json") == f"marks/{digest}.json"
    with pytest.raises(ValueError):
        storage.content_key(digest.upper(), "jpg")
    with pytest.raises(ValueError):
        storage.content_key("abc", "jpg")
    with pytest.raises(ValueError):
        storage.content_key(digest, "")


# ----------------------------------------------------------------------------- round trips


def test_round_trip_memory(mem_prefix: str) -> None:
    url = storage.join(mem_prefix, "a", "b.bin")
    assert not storage.exists(url)
    storage.write_bytes_atomic(url, b"payload")
    assert storage.exists(url)
    assert storage.read_bytes(url) == b"payload"
    storage.write_bytes_atomic(url, b"")
    assert storage.read_bytes(url) == b""


@pytest.mark.parametrize("style", ["file-url", "plain"])
def test_round_trip_local(tmp_path: Path, style: str) -> None:
    base = f"file://{tmp_path}" if style == "file-url" else str(tmp_path)
    url = storage.join(base, "deep", "er", "x.bin")
    storage.write_bytes_atomic(url, b"\x00\x01data")
    assert (tmp_path / "deep" / "er" / "x.bin").read_bytes() == b"\x00\x01data"
    assert storage.read_bytes(url) == b"\x00\x01data"
    assert storage.exists(url)
    assert not storage.exists(storage.join(base, "missing"))
    mode = (tmp_path / "deep" / "er" / "x.bin").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # like a normal open(), not mkstemp's 0600


def test_write_many_memory_and_local(tmp_path: Path, mem_prefix: str) -> None:
    items = {storage.join(mem_prefix, f"m{i}.bin"): bytes([i]) * 10 for i in range(5)}
    items |= {storage.join(str(tmp_path), f"sub/l{i}.bin"): bytes([i]) * 20 for i in range(5)}
    s3_settings = {"key": "K", "secret": SECRET, "region": "us-east-1"}  # ignored off S3
    assert storage.write_many(items, s3_settings) == 10
    for url, data in items.items():
        assert storage.read_bytes(url, s3_settings) == data
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- atomicity


def test_atomic_local_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "obj.bin"
    for i in range(20):
        storage.write_bytes_atomic(str(target), bytes([i]) * 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj.bin"]


def test_failed_local_write_keeps_old_content_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "obj.bin"
    storage.write_bytes_atomic(str(target), b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "simulated: no space left")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="no space"):
        storage.write_bytes_atomic(str(target), b"new" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj.bin"]


def test_reader_never_sees_partial_local_write(tmp_path: Path) -> None:
    """A writer alternates two 4 MB payloads; a concurrent reader must only ever see one
    of them whole (a plain open('wb') write shows truncated content here)."""
    target = str(tmp_path / "obj.bin")
    payloads = (b"A" * (4 * 2**20), b"B" * (4 * 2**20))
    storage.write_bytes_atomic(target, payloads[0])
    stop = threading.Event()
    seen: list[int] = []
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            with open(target, "rb") as f:
                data = f.read()
            (seen if data in payloads else bad).append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            storage.write_bytes_atomic(target, payloads[i % 2], durable=False)
    finally:
        stop.set()
        thread.join()
    assert not bad, f"reader saw {len(bad)} partial objects (sizes {bad[:5]})"
    assert seen


# ----------------------------------------------------------------------------- listing


def _populate(base: str) -> None:
    for name in [
        "b.jpg",
        "a.PNG",
        "nested/c.jpeg",
        "nested/deeper/d.webp",
        "notes.txt",
        "nested/e.JSON",
        ".hidden.jpg",
        "nested/.x.jpg.1234.tmp",
    ]:
        storage.write_bytes_atomic(storage.join(base, name), b"x")
    storage.write_bytes_atomic(base.rstrip("/") + "2/sibling.jpg", b"x")  # not under base


@pytest.mark.parametrize("kind", ["memory", "file-url", "plain"])
def test_list_images_order_and_filter(kind: str, tmp_path: Path, mem_prefix: str) -> None:
    base = {"memory": mem_prefix, "file-url": f"file://{tmp_path}/imgs", "plain": f"{tmp_path}/imgs"}[kind]
    _populate(base)
    expected = [storage.join(base, n) for n in ["a.PNG", "b.jpg", "nested/c.jpeg", "nested/deeper/d.webp"]]
    assert storage.list_images(base) == expected
    assert storage.list_images(base + "/") == expected
    assert storage.list_images(base, extensions=["JPG", ".jpeg"]) == [
        storage.join(base, "b.jpg"),
        storage.join(base, "nested/c.jpeg"),
    ]
    assert storage.list_images(storage.join(base, "nothing-here")) == []
    # every listed URL reads back
    assert all(storage.read_bytes(u) == b"x" for u in expected)


def test_listing_fresh_after_write(mem_prefix: str) -> None:
    storage.write_bytes_atomic(storage.join(mem_prefix, "1.jpg"), b"1")
    assert len(storage.list_images(mem_prefix)) == 1
    storage.write_many({storage.join(mem_prefix, "2.jpg"): b"2"})
    assert len(storage.list_images(mem_prefix)) == 2


# ----------------------------------------------------------------------------- hashing


def test_sha256_streams_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(24 * 2**20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    del data
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        digest = storage.sha256_of(str(path), chunk_size=2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == expected
    assert peak < 6 * 2**20, f"hashing a 24 MB file peaked at {peak / 2**20:.1f} MB"


def test_sha256_memory(mem_prefix: str) -> None:
    data = os.urandom(3 * 2**20 + 17)
    url = storage.join(mem_prefix, "x.bin")
    storage.write_bytes_atomic(url, data)
    assert storage.sha256_of(url, chunk_size=100_000) == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- settings


def test_settings_precedence(tmp_path: Path) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "ENVKEY",
        "AWS_SECRET_ACCESS_KEY": "envsecret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://generic:1",
        "AWS_ENDPOINT_URL_S3": "http://s3-specific:2",
    }
    assert storage.load_s3_settings(env=env) == storage.S3Settings(
        "ENVKEY", "envsecret", None, "eu-west-1", "http://s3-specific:2"
    )

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"key": "FILEKEY", "secret": "filesecret"}))
    with_file = storage.load_s3_settings(env={**env, storage.CONFIG_ENV_VAR: str(config)})
    assert (with_file.key, with_file.secret, with_file.region) == ("FILEKEY", "filesecret", "eu-west-1")
    explicit = storage.load_s3_settings({"key": "OPTKEY", "config_file": str(config)}, env=env)
    assert (explicit.key, explicit.secret) == ("OPTKEY", "filesecret")


def test_env_file_written_by_infra_script_format(tmp_path: Path) -> None:
    env_file = tmp_path / "s3.env"
    env_file.write_text(
        "# comment\nexport AWS_ACCESS_KEY_ID=SOMFKEY\n"
        f"export AWS_SECRET_ACCESS_KEY='{SECRET}'\nAWS_DEFAULT_REGION=us-east-1\n"
        "export AWS_ENDPOINT_URL=http://127.0.0.1:9\n"
    )
    settings = storage.read_config_file(env_file)
    assert settings == storage.S3Settings("SOMFKEY", SECRET, None, "us-east-1", "http://127.0.0.1:9")
    bad = tmp_path / "bad.env"
    bad.write_text("this is not an env file\n")
    with pytest.raises(storage.StorageConfigError, match="bad.env:1"):
        storage.read_config_file(bad)
    with pytest.raises(storage.StorageConfigError, match="cannot read"):
        storage.read_config_file(tmp_path / "missing.json")


def test_region_goes_to_botocore_config_not_client_kwargs() -> None:
    opts = storage.s3_options(
        {"key": "K", "secret": "S", "region": "us-east-1", "client_kwargs": {"region_name": "eu-west-1"}}, env={}
    )
    assert opts["config_kwargs"]["region_name"] == "us-east-1"
    assert "region_name" not in opts.get("client_kwargs", {})
    assert opts["use_listings_cache"] is False


def test_secrets_never_in_repr_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE123",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": SECRET + "-token",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    settings = storage.load_s3_settings(env=env)
    fs = storage.filesystem("s3", {**env, "config_kwargs": {"retries": {"max_attempts": 1}}})
    text = " ".join([repr(settings), str(settings), caplog.text])
    assert SECRET not in text
    assert "AKIDEXAMPLE123" not in text
    same = storage.filesystem("s3", {**env, "config_kwargs": {"retries": {"max_attempts": 1}}})
    assert fs is same  # cached per process


# ----------------------------------------------------------------------------- errors


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"{code} message"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def _wrapped(cause: BaseException, outer: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (TimeoutError("timed out"), True),
        (OSError(errno.ETIMEDOUT, "timed out"), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (_wrapped(_client_error("SlowDown", 503), OSError(errno.EIO, "SlowDown")), True),
        (_wrapped(_client_error("InternalError", 500), OSError(errno.EREMOTEIO, "x")), True),
        (_wrapped(_client_error("Whatever", 502), OSError(errno.EIO, "bad gateway")), True),
        (_client_error("ThrottlingException", 400), True),
        (_wrapped(_client_error("InvalidAccessKeyId", 403), PermissionError("denied")), False),
        (FileNotFoundError("s3://b/k"), False),
        (_client_error("NoSuchKey", 404), False),
        (ValueError("bad argument"), False),
        (OSError(errno.ENOSPC, "no space"), False),
        (RuntimeError("boom"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert storage.is_transient(exc) is transient
