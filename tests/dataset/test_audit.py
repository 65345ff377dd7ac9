"""som.dataset.audit on small real datasets: a clean build is clean, and each broken invariant
(orphan, missing object, duplicate source, reasonless failure) is reported by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from som import storage
from som.dataset.audit import audit
from som.dataset.config import resolve_dataset_config
from som.dataset.manifest import ManifestRow, read_manifest, write_manifest
from som.dataset.shard import mark_source
from som.dataset.sources import list_sources
from som.segment import build_segmenter
from tests.helpers.image_sets import bad_files, derived_photos
from tests.plugins.s3 import S3Server


def _build(raw: str, dest: str) -> list[ManifestRow]:
    """Mark every image under `raw` into `dest` with the fast slic segmenter, as a build would."""
    config = resolve_dataset_config(
        dest, segmenter="slic", segmenter_params={"n_segments": 8}, style={"short_side": 160}
    )
    segmenter = build_segmenter(config.segmenter, config.segmenter_params)
    rows = [mark_source(source, dest, config, segmenter) for source in list_sources(raw)]
    write_manifest(dest, rows)
    return rows


@pytest.fixture
def local_build(tmp_path: Path) -> tuple[str, list[ManifestRow]]:
    """Three good photos and one truncated JPEG, marked into a local dataset."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, data in derived_photos(3, size=120).items():
        (raw / name).write_bytes(data)
    data, _ = bad_files()["truncated.jpg"]
    (raw / "truncated.jpg").write_bytes(data)
    dest = str(tmp_path / "som")
    return dest, _build(str(raw), dest)


def test_a_fresh_build_is_clean_and_counted(local_build: tuple[str, list[ManifestRow]]):
    dest, rows = local_build
    report = audit(dest)
    assert report.clean, report
    assert (report.rows, report.ok, report.failed) == (4, 3, 1)
    assert report.orphaned_objects == report.missing_objects == report.duplicate_sources == []


def test_an_empty_destination_is_clean(tmp_path: Path):
    report = audit(str(tmp_path / "nothing"))
    assert report.clean and report.rows == report.ok == report.failed == 0


def test_orphan_missing_duplicate_and_reasonless_failure_are_each_reported(local_build):
    dest, rows = local_build
    marked = [r for r in rows if r.status == "marked"]
    # an orphan: a mark object no row names (as a killed build leaves before it commits)
    orphan = storage.content_key("f" * 64, "jpg")
    storage.write_bytes_atomic(storage.join(dest, orphan), b"jpeg bytes")
    # a missing object: the JSON of one marked row is gone
    storage.remove(marked[0].json_uri)
    # a duplicate source and a failure without a reason, written straight into a new version
    duplicate = dataclasses.replace(marked[1])
    reasonless = ManifestRow(
        source_uri="file:///raw/x.jpg", source_fingerprint="1:a", sha256=None, status="failed", error="  "
    )
    write_manifest(dest, [*read_manifest(dest), duplicate, reasonless])

    report = audit(dest)
    assert not report.clean
    assert report.orphaned_objects == [orphan]
    assert report.missing_objects == [storage.content_key(marked[0].sha256, "json")]
    assert report.duplicate_sources == [marked[1].source_uri]
    assert report.failed_without_reason == ["file:///raw/x.jpg"]
    assert (report.rows, report.ok, report.failed) == (6, 4, 2)


def test_audit_reads_s3_datasets(s3_server: S3Server, s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same checks over a real S3 dataset (object keys compare equal across URL forms)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    storage.clear_filesystems()
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, data in derived_photos(2, size=120).items():
        (raw / name).write_bytes(data)
    dest = storage.join(s3_prefix, "som")
    rows = _build(str(raw), dest)
    assert audit(dest).clean and audit(dest).ok == 2
    storage.remove(rows[0].marked_uri)
    storage.write_bytes_atomic(storage.join(dest, storage.content_key("e" * 64, "json")), b"{}")
    report = audit(dest)
    assert report.missing_objects == [storage.content_key(rows[0].sha256, "jpg")]
    assert report.orphaned_objects == [storage.content_key("e" * 64, "json")]
