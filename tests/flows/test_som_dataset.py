"""The SoM dataset flow against real components: SeaweedFS, a Prefect server, Dask processes."""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from flows.som_dataset import build_som_dataset
from som import storage
from som.dataset.manifest import latest_version, read_manifest
from tests.helpers.image_sets import bad_files, derived_photos, unusual_but_valid
from tests.helpers.s3 import use_s3

pytestmark = pytest.mark.slow
FAST = {"segmenter": "slic", "segmenter_params": {"n_segments": 12}, "short_side": 96, "workers": 2}


def upload(prefix: str, files: dict[str, bytes]) -> None:
    storage.write_many({storage.join(prefix, "images", name): data for name, data in files.items()})


def objects(prefix: str) -> dict[str, str]:
    """Every object under the dataset's marks/ with its ETag (changes whenever it is rewritten)."""
    fs, root = storage.resolve(storage.join(prefix, "dataset", "marks"))
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {path: info.get("ETag") for path, info in found.items() if info.get("type") != "directory"}


def build(prefix: str, **kwargs):
    state = build_som_dataset(
        source=storage.join(prefix, "images"),
        dest=storage.join(prefix, "dataset"),
        return_state=True,
        **{**FAST, **kwargs},
    )
    return state, state.result(raise_on_failure=False)


def test_build_quarantines_bad_images_and_reruns_only_do_new_work(prefect_api, s3_server, s3_prefix, monkeypatch):
    use_s3(monkeypatch, s3_server)
    good = {**derived_photos(23), **unusual_but_valid()}
    bad = bad_files()
    upload(s3_prefix, {**good, **{name: data for name, (data, _) in bad.items()}})
    dest = storage.join(s3_prefix, "dataset")

    state, report = build(s3_prefix, shard_size=8)
    assert state.is_completed(), state.message
    rows = {row.source_uri.rsplit("/", 1)[1]: row for row in read_manifest(dest)}
    assert len(rows) == 30 and report.shards == 4
    for name in good:
        assert rows[name].status == "marked" and rows[name].n_marks > 0, name
        assert storage.exists(rows[name].marked_uri) and storage.exists(rows[name].json_uri)
    for name, (_, reason) in bad.items():
        assert rows[name].status == "failed" and reason in rows[name].error, (name, rows[name].error)
    first_objects = objects(s3_prefix)
    assert len(first_objects) == 2 * len(good), "one image + one JSON per good image, nothing else"
    version = latest_version(dest)

    state, report = build(s3_prefix)
    assert state.is_completed() and state.message.startswith("nothing new")
    assert latest_version(dest) == version and objects(s3_prefix) == first_objects

    state, report = build(s3_prefix, shard_size=8, incremental=False)
    assert state.is_completed()
    assert report.shards == report.cached_shards == 4, "same shards: every one served from Prefect's cache"
    assert objects(s3_prefix) == first_objects

    upload(s3_prefix, derived_photos(3, start=100))
    state, report = build(s3_prefix, shard_size=8)
    assert state.is_completed() and report.new == 3 and len(report.rows) == 3
    assert len(read_manifest(dest)) == 33 and latest_version(dest) != version
    grown = objects(s3_prefix)
    assert len(grown) == len(first_objects) + 6
    assert {k: v for k, v in grown.items() if k in first_objects} == first_objects, "old objects untouched"


def test_a_conflicting_marking_config_is_refused(prefect_api, s3_server, s3_prefix, monkeypatch):
    use_s3(monkeypatch, s3_server)
    upload(s3_prefix, derived_photos(2))
    assert build(s3_prefix)[0].is_completed()
    state, _ = build(s3_prefix, short_side=200)
    assert state.is_failed() and "short_side=200 (recorded 96)" in state.message


def dask_worker_processes() -> list[psutil.Process]:
    """Live Dask worker processes started by this test process (zombies of earlier tests skipped)."""
    workers = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in part for part in process.cmdline()):
                workers.append(process)
        except psutil.Error:
            continue
    return workers


def after_first_outputs(prefix: str, action) -> threading.Thread:
    """Run `action` in a thread as soon as the flow has written its first output."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if objects(prefix):
                    break
            except OSError:  # a listing racing with writes: look again
                pass
            time.sleep(0.05)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_killing_a_dask_worker_mid_run_loses_and_duplicates_nothing(prefect_api, s3_server, s3_prefix, monkeypatch):
    use_s3(monkeypatch, s3_server)
    images = derived_photos(24, size=200)
    upload(s3_prefix, images)
    killed = []

    def kill_one_worker() -> None:
        workers = dask_worker_processes()
        if workers:
            workers[0].kill()
            killed.append(workers[0].pid)

    watcher = after_first_outputs(s3_prefix, kill_one_worker)
    state, report = build(s3_prefix, shard_size=3, short_side=200, segmenter_params={"n_segments": 40})
    watcher.join()
    assert killed, "a worker was killed while shards were running"
    assert state.is_completed(), state.message
    rows = read_manifest(storage.join(s3_prefix, "dataset"))
    assert sorted(row.source_uri.rsplit("/", 1)[1] for row in rows) == sorted(images)
    assert all(row.status == "marked" for row in rows)
    assert len(objects(s3_prefix)) == 2 * len(images)


def test_storage_outage_mid_run_is_carried_by_retries(prefect_api, seaweed_factory, tmp_path, monkeypatch):
    server = seaweed_factory(tmp_path / "s3")
    use_s3(monkeypatch, server)
    prefix = server.url("outage")
    images = derived_photos(16, size=200)
    upload(prefix, images)
    outage = []

    def stop_for_a_while() -> None:
        server.stop()
        outage.append(time.monotonic())
        time.sleep(3)
        server.start(port=server.port)
        outage.append(time.monotonic())

    watcher = after_first_outputs(prefix, stop_for_a_while)
    state, report = build(prefix, shard_size=2, short_side=200, segmenter_params={"n_segments": 40})
    watcher.join()
    assert len(outage) == 2 and outage[1] - outage[0] >= 3
    assert state.is_completed(), state.message
    rows = read_manifest(storage.join(prefix, "dataset"))
    assert len(rows) == len(images) and all(row.status == "marked" for row in rows)
    assert len(objects(prefix)) == 2 * len(images)


def test_refresh_marks_only_new_images_with_the_recorded_config(prefect_api, s3_server, s3_prefix, monkeypatch):
    from flows.refresh import refresh_som_dataset

    use_s3(monkeypatch, s3_server)
    upload(s3_prefix, derived_photos(2))
    assert build(s3_prefix)[0].is_completed()
    source, dest = storage.join(s3_prefix, "images"), storage.join(s3_prefix, "dataset")
    state = refresh_som_dataset(source=source, dest=dest, workers=1, return_state=True)
    assert state.is_completed() and state.message.startswith("nothing new")
    upload(s3_prefix, derived_photos(1, start=50))
    state = refresh_som_dataset(source=source, dest=dest, workers=1, return_state=True)
    report = state.result()
    assert state.is_completed() and len(report.rows) == 1
    assert min(report.rows[0].width, report.rows[0].height) == 96, "marked at the recorded short side"


def test_credentials_from_a_prefect_secret_block(prefect_api, s3_server, s3_prefix, monkeypatch, caplog):
    import json

    from prefect.blocks.system import Secret

    use_s3(monkeypatch, s3_server)
    upload(s3_prefix, derived_photos(2))
    settings = {
        "key": s3_server.access_key,
        "secret": s3_server.secret_key,
        "endpoint_url": s3_server.endpoint_url,
        "region": s3_server.region,
    }
    Secret(value=json.dumps(settings)).save("somflow-test-s3", overwrite=True)
    for name in s3_server.env:
        monkeypatch.delenv(name)
    storage.clear_filesystems()
    state, report = build(s3_prefix, workers=1, storage_secret="somflow-test-s3")
    assert state.is_completed(), state.message
    assert len(report.rows) == 2 and all(row.status == "marked" for row in report.rows)
    assert s3_server.secret_key not in caplog.text, "the secret is never logged"
