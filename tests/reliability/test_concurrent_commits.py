"""Concurrent manifest commits into one dataset (issue 11 item 1), on real storage: SeaweedFS
(which honours If-Match / If-None-Match) and local files. Every row of every commit must be
in `_latest` afterwards, exactly once."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from som import storage
from som.dataset import commit
from som.dataset.commit import CommitTimeout, LeaseOwner, commit_rows, lease, lock_url
from som.dataset.manifest import ManifestRow, latest_version, read_manifest, write_manifest
from tests.helpers.s3 import use_s3


def rows_of(build: str, n: int) -> list[ManifestRow]:
    return [ManifestRow(f"src://{build}/{i:04d}.jpg", f"fp-{build}-{i}", None, "marked", n_marks=i) for i in range(n)]


@pytest.fixture(params=["s3", "file"])
def dest(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> str:
    """A fresh dataset URL on SeaweedFS or in a local folder."""
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        use_s3(monkeypatch, server)
        return storage.join(request.getfixturevalue("s3_prefix"), "dataset")
    return f"file://{tmp_path}/dataset"


def assert_all_rows_once(dest: str, builds: dict[str, list[ManifestRow]]) -> None:
    rows = read_manifest(dest)
    uris = [row.source_uri for row in rows]
    assert len(uris) == len(set(uris)), "no row duplicated"
    expected = {row.source_uri for batch in builds.values() for row in batch}
    missing = expected - set(uris)
    assert not missing, f"{len(missing)} committed rows lost, e.g. {sorted(missing)[:3]}"


@pytest.mark.parametrize("n_builds", [2, 3])
def test_racing_commits_from_threads_keep_every_row(dest, n_builds):
    write_manifest(dest, rows_of("seed", 5))  # an existing dataset being refreshed
    builds = {f"b{k}": rows_of(f"b{k}", 40) for k in range(n_builds)}
    barrier = threading.Barrier(n_builds)

    def one(name: str) -> str:
        barrier.wait()
        return commit_rows(dest, builds[name], run_id=name)[0]

    with ThreadPoolExecutor(n_builds) as pool:
        versions = list(pool.map(one, builds))
    assert len(set(versions)) == n_builds
    assert_all_rows_once(dest, {**builds, "seed": rows_of("seed", 5)})
    assert len(read_manifest(dest)) == 5 + 40 * n_builds
    assert latest_version(dest) == max(versions) or latest_version(dest) in versions


def _commit_in_child(dest: str, name: str, n: int, start_at: float, env: dict[str, str]) -> None:
    os.environ.update(env)
    storage.clear_filesystems()
    time.sleep(max(0.0, start_at - time.time()))
    for chunk in range(3):  # several commits each: a refresh landing during a build's commits
        commit_rows(dest, rows_of(f"{name}-{chunk}", n), run_id=name)


def test_racing_commits_from_processes_keep_every_row(dest):
    # spawn, not fork: a forked child of a long test session inherits s3fs' event loop and
    # torch's thread pools mid-state (see som.mark.batch.run_jobs)
    ctx = multiprocessing.get_context("spawn")
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    start_at = time.time() + 1.5
    procs = [ctx.Process(target=_commit_in_child, args=(dest, f"p{k}", 30, start_at, env)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    builds = {f"p{k}-{c}": rows_of(f"p{k}-{c}", 30) for k in range(3) for c in range(3)}
    assert_all_rows_once(dest, builds)
    assert len(read_manifest(dest)) == 270


def test_seaweedfs_honours_conditional_writes(s3_server, s3_prefix, monkeypatch):
    """The optimistic path is the one used against the test server (probed, not assumed)."""
    use_s3(monkeypatch, s3_server)
    url = storage.join(s3_prefix, "x", "_latest")
    assert storage.supports_conditional_writes(url)
    tag = storage.compare_and_swap(url, b"v1", None)
    with pytest.raises(storage.PreconditionFailed):
        storage.compare_and_swap(url, b"v2", None)
    with pytest.raises(storage.PreconditionFailed):
        storage.compare_and_swap(url, b"v2", '"0123"')
    storage.compare_and_swap(url, b"v2", tag)
    assert storage.read_tagged(url)[0] == b"v2"


def test_a_commit_killed_midway_blocks_nobody(dest):
    """A build killed -9 after writing its version but before swapping `_latest` leaves an
    orphan version file and nothing held: the next commit neither waits nor loses rows."""
    write_manifest(dest, rows_of("seed", 3))
    ctx = multiprocessing.get_context("spawn")  # see test_racing_commits_from_processes_keep_every_row
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    child = ctx.Process(target=_killed_before_swap, args=(dest, env))
    child.start()
    child.join(60)
    assert child.exitcode == -9
    started = time.monotonic()
    commit_rows(dest, rows_of("next", 4), wait_s=30)
    assert time.monotonic() - started < 10
    assert {r.source_uri for r in read_manifest(dest)} == {
        r.source_uri for r in rows_of("seed", 3) + rows_of("next", 4)
    }


def _killed_before_swap(dest: str, env: dict[str, str]) -> None:
    os.environ.update(env)
    storage.clear_filesystems()

    def die(*args, **kwargs):
        os.kill(os.getpid(), 9)

    real = commit._write_new_version

    def write_then_die(*args, **kwargs):
        version = real(*args, **kwargs)
        die()
        return version

    commit._write_new_version = write_then_die
    commit_rows(dest, rows_of("killed", 5))


# ----------------------------------------------------------------------------- the lease fallback


@pytest.fixture
def no_conditional_writes(monkeypatch) -> None:
    """Behave as on an S3 server that ignores If-Match / If-None-Match."""
    monkeypatch.setattr(storage, "supports_conditional_writes", lambda url, options=None: False)
    monkeypatch.setattr(commit, "SETTLE_S", 0.3)


def test_lease_fallback_racing_commits_keep_every_row(dest, no_conditional_writes):
    builds = {f"b{k}": rows_of(f"b{k}", 20) for k in range(3)}
    barrier = threading.Barrier(3)

    def one(name: str) -> str:
        barrier.wait()
        return commit_rows(dest, builds[name], run_id=name)[0]

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(one, builds))
    assert_all_rows_once(dest, builds)
    assert not storage.exists(lock_url(dest)), "the lease is released"


@pytest.mark.parametrize("conditional", [True, False])
def test_a_held_lease_makes_others_wait_and_names_its_owner(dest, monkeypatch, caplog, conditional):
    if not conditional:
        monkeypatch.setattr(storage, "supports_conditional_writes", lambda url, options=None: False)
    url = lock_url(dest)
    caplog.set_level(logging.INFO, logger="som.dataset.commit")
    with lease(url, run_id="nightly-refresh") as holder:
        assert json.loads(storage.read_bytes(url))["run_id"] == "nightly-refresh"
        with pytest.raises(CommitTimeout, match=rf"held by host .*pid {os.getpid()}, run nightly-refresh, since"):
            with lease(url, wait_s=1.0, poll_s=0.2):
                pass
        assert holder.pid == os.getpid()
    assert "waiting for" in caplog.text and "nightly-refresh" in caplog.text
    with lease(url, wait_s=1.0):  # released: free again at once
        pass


@pytest.mark.parametrize("conditional", [True, False])
def test_a_stale_lease_of_a_killed_build_is_broken_with_a_warning(dest, monkeypatch, caplog, conditional):
    if not conditional:
        monkeypatch.setattr(storage, "supports_conditional_writes", lambda url, options=None: False)
        monkeypatch.setattr(commit, "SETTLE_S", 0.1)
    url = lock_url(dest)
    dead = LeaseOwner("dead", "elsewhere", 999999, "killed-run", "2026-01-01T00:00:00+00:00", time.time() - 1)
    storage.write_bytes_atomic(url, dead.encode())
    started = time.monotonic()
    with lease(url, wait_s=5):
        pass
    assert time.monotonic() - started < 3
    assert "breaking the expired commit lease" in caplog.text and "killed-run" in caplog.text
