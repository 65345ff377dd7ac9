"""Publish a build's manifest rows safely when several builds write one dataset at once.

Without this, two builds (a nightly refresh overlapping a manual build) each merged their
rows into the manifest they read at start and wrote `_latest` blindly: the later writer won
and the other build's rows were lost. Now a commit re-reads `_latest` when it commits:

- optimistic (the default wherever the storage can compare-and-swap: local files, memory://,
  S3 servers that honour If-Match / If-None-Match, SeaweedFS 4.48 included): read `_latest`
  and its tag, merge, write a new version, swap `_latest` only if its tag is unchanged;
  on a lost race, re-read and merge again. Nothing is held, so a killed build blocks nobody.
- a lease otherwise (S3 servers that ignore the headers): a lock object naming its owner
  (host, pid, run id, since, expiry) written and read back; others wait a bounded, logged
  time; an expired lease (its owner was killed) is broken with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from som import storage
from som.dataset.manifest import (
    LATEST,
    ManifestRow,
    manifest_url,
    merge_rows,
    new_version_name,
    read_manifest,
    write_manifest_version,
)

log = logging.getLogger(__name__)

LOCK_NAME = "_commit.lock"
DEFAULT_WAIT_S = 600.0
DEFAULT_LEASE_TTL_S = 300.0
SETTLE_S = 0.5
"""Without conditional writes, how long a lease writer waits before reading its lease back:
a concurrent writer's PUT that lands later overwrites it, and the read-back shows who won."""


class CommitTimeout(TimeoutError):
    """The manifest could not be committed within the wait; the message says who held it."""


def latest_url(dest: str) -> str:
    return storage.join(dest, "manifests", LATEST)


def lock_url(dest: str) -> str:
    return storage.join(dest, "manifests", LOCK_NAME)


@dataclass(frozen=True)
class LeaseOwner:
    """Who holds a lease, as written into the lock object."""

    id: str
    host: str
    pid: int
    run_id: str | None
    since: str
    expires: float  # epoch seconds

    @classmethod
    def me(cls, ttl_s: float, run_id: str | None = None) -> LeaseOwner:
        now = time.time()
        return cls(
            uuid.uuid4().hex,
            socket.gethostname(),
            os.getpid(),
            run_id,
            datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            now + ttl_s,
        )

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, run {self.run_id or '-'}, since {self.since}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> LeaseOwner | None:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None  # a torn or foreign lock object: treated as expired


def _expired(owner: LeaseOwner | None) -> bool:
    return owner is None or owner.expires < time.time()


def _try_acquire(url: str, me: LeaseOwner, conditional: bool) -> tuple[bool, LeaseOwner | None, str | None]:
    """One attempt: (acquired, current holder, its tag)."""
    current = storage.read_tagged(url)
    holder = LeaseOwner.decode(current[0]) if current else None
    if current is not None and not _expired(holder):
        return False, holder, current[1]
    if current is not None:
        log.warning(
            "breaking the expired commit lease %s held by %s",
            url,
            holder.describe() if holder else "an unreadable owner",
        )
    if conditional:
        try:
            storage.compare_and_swap(url, me.encode(), current[1] if current else None)
            return True, me, None
        except storage.PreconditionFailed:
            return False, None, None
    storage.write_bytes_atomic(url, me.encode())
    time.sleep(SETTLE_S)
    back = storage.read_tagged(url)
    winner = LeaseOwner.decode(back[0]) if back else None
    return (winner is not None and winner.id == me.id), winner, None


@contextlib.contextmanager
def lease(
    url: str,
    ttl_s: float = DEFAULT_LEASE_TTL_S,
    wait_s: float = DEFAULT_WAIT_S,
    run_id: str | None = None,
    poll_s: float = 0.5,
) -> Iterator[LeaseOwner]:
    """Hold the lock object `url` (with owner and expiry) for the block.

    Waits at most `wait_s` for another holder, logging who it is, then raises CommitTimeout.
    A lease past its expiry belongs to a killed process: it is broken with a warning."""
    conditional = storage.supports_conditional_writes(url)
    deadline = time.monotonic() + wait_s
    next_report = 0.0
    while True:
        me = LeaseOwner.me(ttl_s, run_id)
        acquired, holder, _ = _try_acquire(url, me, conditional)
        if acquired:
            break
        now = time.monotonic()
        who = holder.describe() if holder else "another build"
        if now >= deadline:
            raise CommitTimeout(
                f"{url} is held by {who}; gave up after {wait_s:.0f} s (it expires by itself at {_when(holder)})"
            )
        if now >= next_report:
            log.info("waiting for %s, held by %s (up to %.0f s more)", url, who, deadline - now)
            next_report = now + 10
        time.sleep(poll_s * random.uniform(0.5, 1.5))
    try:
        yield me
    finally:
        current = storage.read_tagged(url)
        if current and (owner := LeaseOwner.decode(current[0])) and owner.id == me.id:
            storage.remove(url)
        else:
            log.warning("commit lease %s was taken over while held (held longer than its %.0f s ttl)", url, ttl_s)


def _when(owner: LeaseOwner | None) -> str:
    if owner is None:
        return "unknown"
    return datetime.fromtimestamp(owner.expires, UTC).isoformat(timespec="seconds")


def _write_new_version(dest: str, rows: list[ManifestRow]) -> str:
    """Write rows under a version name no other build has (create-if-absent)."""
    while True:
        version = new_version_name()
        try:
            write_manifest_version(dest, rows, version, exclusive=True)
            return version
        except storage.PreconditionFailed:
            time.sleep(0.001)  # same microsecond as another build: take the next name


def commit_rows(
    dest: str, new_rows: Iterable[ManifestRow], run_id: str | None = None, wait_s: float = DEFAULT_WAIT_S
) -> tuple[str, list[ManifestRow]]:
    """Merge `new_rows` into whatever `_latest` holds now and publish it as a new version.

    Returns (version, all rows). Safe against concurrent commits into the same `dest`:
    every committed row ends up in `_latest`."""
    new_rows = list(new_rows)
    pointer = latest_url(dest)
    if not storage.supports_conditional_writes(pointer):
        with lease(lock_url(dest), wait_s=wait_s, run_id=run_id):
            rows = merge_rows(read_manifest(dest), new_rows)
            version = write_manifest_version(dest, rows, new_version_name())
            storage.write_bytes_atomic(pointer, version.encode("utf-8"))
            return version, rows
    deadline = time.monotonic() + wait_s
    for attempt in range(1, 1_000_000):
        current = storage.read_tagged(pointer)
        base = (current[0].decode("utf-8").strip() or None) if current else None
        rows = merge_rows(read_manifest(dest, base) if base else [], new_rows)
        version = _write_new_version(dest, rows)
        try:
            storage.compare_and_swap(pointer, version.encode("utf-8"), current[1] if current else None)
        except storage.PreconditionFailed:
            storage.remove(manifest_url(dest, version))  # never named by _latest
            if time.monotonic() >= deadline:
                raise CommitTimeout(
                    f"{pointer} kept changing under {attempt} commit attempts for {wait_s:.0f} s; run the build again"
                ) from None
            log.info(
                "%s moved on since %s (another build committed); merging again (attempt %d)", pointer, base, attempt + 1
            )
            time.sleep(min(2.0, 0.02 * 2 ** min(attempt, 7)) * random.uniform(0.5, 1.5))
            continue
        if attempt > 1:
            log.info("committed %s after %d attempts", version, attempt)
        return version, rows
    raise AssertionError("unreachable")
