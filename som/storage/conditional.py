"""Compare-and-swap writes: one writer wins, the other learns it lost.

Commits of a dataset version and other shared records use these so that two concurrent
writers never both believe they wrote (S3 conditional PUTs, flock for local files).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator

from som.storage.errors import PreconditionFailed, is_precondition_failure
from som.storage.filesystems import LOCAL_PROTOCOLS, S3_PROTOCOLS, explained, protocol_of, resolve
from som.storage.io import remove, write_local_atomic
from som.storage.paths import join
from som.storage.settings import Options, s3_options

log = logging.getLogger(__name__)

_CAS_LOCK = threading.Lock()  # memory:// and other in-process filesystems
_CAS_SUPPORT: dict[tuple[int, str, str], bool] = {}


def _content_tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _local_cas_lock(path: str) -> Iterator[None]:
    """flock on a hidden sibling: serialises read-compare-replace across processes, and
    the kernel drops it when a holder dies (no stale lock after kill -9)."""
    import fcntl

    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, f".{os.path.basename(path)}.cas-lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def read_tagged(url: str, options: Options | None = None) -> tuple[bytes, str] | None:
    """(content, tag) read in one step, or None when the object does not exist.

    The tag is what `compare_and_swap` expects back: the S3 ETag, or the content's sha256
    for local and memory files."""
    fs, path = resolve(url, options)
    protocol = protocol_of(url)
    with explained(url):
        if protocol in S3_PROTOCOLS:
            from fsspec.asyn import sync

            bucket, key, _ = fs.split_path(path)

            async def get() -> tuple[bytes, str]:
                response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
                async with response["Body"] as body:
                    return await body.read(), response["ETag"]

            try:
                return sync(fs.loop, get)
            except FileNotFoundError:
                return None
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            return None
        return data, _content_tag(data)


def compare_and_swap(url: str, data: bytes, expected: str | None, options: Options | None = None) -> str:
    """Write `url` only if it still has tag `expected` (None: only if it does not exist);
    returns the new tag, raises PreconditionFailed otherwise.

    S3: one PutObject with If-Match / If-None-Match (the server decides atomically; check
    `supports_conditional_writes` for servers that ignore the headers). Local files: read,
    compare and os.replace under an flock. memory://: under a process lock."""
    fs, path = resolve(url, options)
    protocol = protocol_of(url)
    data = bytes(data)
    with explained(url):
        if protocol in S3_PROTOCOLS:
            bucket, key, _ = fs.split_path(path)
            condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
            try:
                response = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
            except OSError as exc:
                if is_precondition_failure(exc):
                    raise PreconditionFailed(f"{url} changed since it was read ({condition})") from exc
                raise
            finally:
                fs.invalidate_cache(path)
            return response["ETag"]
        guard = _local_cas_lock(path) if protocol in LOCAL_PROTOCOLS else _CAS_LOCK
        with guard:
            try:
                current: str | None = _content_tag(fs.cat_file(path))
            except FileNotFoundError:
                current = None
            if current != expected:
                raise PreconditionFailed(f"{url} has tag {current}, expected {expected}")
            if protocol in LOCAL_PROTOCOLS:
                write_local_atomic(path, data, durable=True)
            else:
                fs.pipe_file(path, data)
            fs.invalidate_cache(path)
        return _content_tag(data)


def supports_conditional_writes(url: str, options: Options | None = None) -> bool:
    """Whether `compare_and_swap` is safe for `url`: always for local and memory files; for
    S3, probed once per endpoint and bucket (two If-None-Match PUTs of one key: the second
    must be refused), because some S3-compatible servers silently ignore the headers."""
    protocol = protocol_of(url)
    if protocol not in S3_PROTOCOLS:
        return True
    fs, path = resolve(url, options)
    bucket = fs.split_path(path)[0]
    cache_key = (os.getpid(), str(getattr(fs, "endpoint_url", None) or s3_options(options).get("endpoint_url")), bucket)
    if cache_key in _CAS_SUPPORT:
        return _CAS_SUPPORT[cache_key]
    import uuid

    probe = join(url.rsplit("/", 1)[0], f".cas-probe-{uuid.uuid4().hex}")
    try:
        compare_and_swap(probe, b"1", None, options)
        try:
            compare_and_swap(probe, b"2", None, options)
            supported = False
        except PreconditionFailed:
            supported = True
    finally:
        remove(probe, options)
    log.info(
        "S3 conditional writes %s on %s (bucket %s)", "supported" if supported else "IGNORED", cache_key[1], bucket
    )
    _CAS_SUPPORT[cache_key] = supported
    return supported
