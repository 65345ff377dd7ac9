"""Reads and atomic writes of whole objects, by URL, for every protocol."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from fsspec.spec import AbstractFileSystem

from som.images import IMAGE_EXTENSIONS
from som.storage.filesystems import LOCAL_PROTOCOLS, S3_PROTOCOLS, explained, protocol_of, resolve
from som.storage.paths import join
from som.storage.settings import Options

HASH_CHUNK_SIZE = 8 * 2**20
"""Streaming hash reads: large enough for few S3 range requests, small enough for memory."""


def read_bytes(url: str, options: Options | None = None) -> bytes:
    """The whole object."""
    fs, path = resolve(url, options)
    with explained(url):
        return fs.cat_file(path)


def exists(url: str, options: Options | None = None) -> bool:
    """Whether an object (or a non-empty prefix / folder) exists, asked fresh."""
    fs, path = resolve(url, options)
    with explained(url):
        fs.invalidate_cache(path)
        return bool(fs.exists(path))


def sha256_of(url: str, options: Options | None = None, chunk_size: int = HASH_CHUNK_SIZE) -> str:
    """Hex sha256 of an object, streamed in chunks (never the whole object in memory)."""
    fs, path = resolve(url, options)
    digest = hashlib.sha256()
    open_kwargs: dict[str, Any] = {"block_size": chunk_size}
    if protocol_of(url) in S3_PROTOCOLS:
        open_kwargs["cache_type"] = "none"  # each read is one range GET; no read-ahead copy
    with explained(url), fs.open(path, "rb", **open_kwargs) as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset("." + e.lower().lstrip(".") for e in extensions)


def list_images(
    prefix_url: str, extensions: Iterable[str] = IMAGE_EXTENSIONS, options: Options | None = None
) -> list[str]:
    """Every object under a prefix/folder whose extension matches (case-insensitive),
    recursively, as URLs in the caller's own form, sorted so every run sees the same order.

    Hidden names (starting with '.') are skipped: they include temp files of atomic writes."""
    wanted = _normalise_extensions(extensions)
    fs, root = resolve(prefix_url, options)
    root = root.rstrip("/")
    with explained(prefix_url):
        fs.invalidate_cache(root)
        try:
            found = fs.find(root)
        except FileNotFoundError:
            found = []
    base = os.fspath(prefix_url)
    urls = []
    for path in found:
        if not path.startswith(root + "/"):  # "images2/x.jpg" is not under "images"
            continue
        relative = path[len(root) + 1 :]
        name = relative.rsplit("/", 1)[-1]
        if name.startswith(".") or os.path.splitext(name)[1].lower() not in wanted:
            continue
        urls.append(join(base, relative))
    return sorted(urls)


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_local_atomic(path: str, data: bytes, durable: bool) -> None:
    """Temp sibling + os.replace: readers see the old file or the new one, never a part."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; look like open()
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:  # make the rename itself survive a crash
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes_atomic(url: str, data: bytes, options: Options | None = None, durable: bool = True) -> None:
    """Write an object whole or not at all.

    Local files: temp sibling, fsync (when `durable`), os.replace. S3: one PUT (or a
    multipart upload that only appears on completion), atomic by the S3 contract.
    memory://: stored in one step."""
    fs, path = resolve(url, options)
    protocol = protocol_of(url)
    with explained(url):
        if protocol in LOCAL_PROTOCOLS:
            write_local_atomic(path, bytes(data), durable)
        else:
            fs.pipe_file(path, bytes(data))
        fs.invalidate_cache(path)


def write_many(
    items: Mapping[str, bytes], options: Options | None = None, batch_size: int | None = None, durable: bool = True
) -> int:
    """Write several objects; each is atomic, the set is not (a failure leaves some written).

    S3 objects go through one concurrent ``fs.pipe`` per filesystem (about 2x the
    throughput of one PUT after another, INFRA-NOTES); local files are written atomically one
    by one. Returns the number of objects written."""
    groups: dict[int, tuple[AbstractFileSystem, str, dict[str, bytes], str]] = {}
    for url, data in items.items():
        fs, path = resolve(url, options)
        group = groups.setdefault(id(fs), (fs, protocol_of(url), {}, url))
        group[2][path] = bytes(data)
    for fs, protocol, batch, first_url in groups.values():
        with explained(first_url):
            if protocol in LOCAL_PROTOCOLS:
                for path, data in batch.items():
                    write_local_atomic(path, data, durable)
            elif getattr(fs, "async_impl", False):
                fs.pipe(batch, batch_size=batch_size)  # concurrent PUTs
            else:
                fs.pipe(batch)
            for path in batch:
                fs.invalidate_cache(path)
    return len(items)


def remove(url: str, options: Options | None = None) -> None:
    """Delete one object; a missing one is fine."""
    fs, path = resolve(url, options)
    with explained(url), contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)
        fs.invalidate_cache(path)
