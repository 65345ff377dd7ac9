"""Manifests, source listing and shard marking on local storage (the S3 path is in tests/flows)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from som.dataset.config import read_dataset_config, resolve_dataset_config
from som.dataset.manifest import ManifestRow, latest_version, merge_rows, read_manifest, write_manifest
from som.dataset.shard import mark_source
from som.dataset.sources import list_sources, split_into_shards
from som.segment import build_segmenter
from tests.helpers.image_sets import bad_files, derived_photos


def row(uri: str, status: str = "marked", **kwargs) -> ManifestRow:
    return ManifestRow(source_uri=uri, source_fingerprint="1:a", sha256="0" * 64, status=status, **kwargs)


def test_manifest_versions_round_trip_and_latest_points_at_the_newest(tmp_path: Path):
    dest = str(tmp_path / "ds")
    assert read_manifest(dest) == [] and latest_version(dest) is None
    first = write_manifest(dest, [row("a.jpg", n_marks=3, width=640, height=480)])
    assert read_manifest(dest) == [row("a.jpg", n_marks=3, width=640, height=480)]
    merged = merge_rows(
        read_manifest(dest), [row("b.jpg", status="failed", error="empty file (0 bytes)"), row("a.jpg", n_marks=5)]
    )
    second = write_manifest(dest, merged)
    assert second > first and latest_version(dest) == second
    assert [(r.source_uri, r.n_marks, r.error) for r in read_manifest(dest)] == [
        ("a.jpg", 5, None),
        ("b.jpg", 0, "empty file (0 bytes)"),
    ]
    assert read_manifest(dest, first)[0].n_marks == 3, "older versions stay readable"


def test_sources_are_sorted_filtered_and_fingerprinted(tmp_path: Path):
    root = tmp_path / "raw"
    (root / "sub").mkdir(parents=True)
    for name, data in derived_photos(3).items():
        (root / "sub" / name).write_bytes(data)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(b"x")
    sources = list_sources(str(root))
    assert [Path(s.uri).name for s in sources] == ["photo_000.jpg", "photo_001.jpg", "photo_002.jpg"]
    before = sources[0].fingerprint
    time.sleep(0.01)
    Path(sources[0].uri).write_bytes(Path(sources[1].uri).read_bytes())
    os.utime(sources[0].uri)
    assert list_sources(str(root))[0].fingerprint != before, "a rewritten image is new work"
    assert [len(s) for s in split_into_shards(sources, 2)] == [2, 1]
    with pytest.raises(ValueError):
        split_into_shards(sources, 0)


def test_coco_file_selects_its_images(tmp_path: Path):
    root = tmp_path / "raw"
    root.mkdir()
    for name, data in derived_photos(3).items():
        (root / name).write_bytes(data)
    coco = tmp_path / "instances.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "photo_001.jpg", "width": 1, "height": 1}], "annotations": []}')
    assert [Path(s.uri).name for s in list_sources(str(root), coco=str(coco))] == ["photo_001.jpg"]


def test_dataset_config_is_recorded_reused_and_guarded(tmp_path: Path):
    dest = str(tmp_path / "ds")
    first = resolve_dataset_config(
        dest, segmenter="slic", segmenter_params={"n_segments": "20"}, style={"short_side": 320}
    )
    assert read_dataset_config(dest) == first and first.segmenter_params["n_segments"] == 20
    assert resolve_dataset_config(dest) == first, "unset settings reuse the recorded config"
    assert resolve_dataset_config(dest, segmenter_params={"n_segments": 20}, style={"short_side": 320}) == first
    with pytest.raises(ValueError, match="short_side=640 .recorded 320.") as refused:
        resolve_dataset_config(dest, style={"short_side": 640, "modes": ["mark"]})
    assert "new destination" in str(refused.value)
    with pytest.raises(ValueError, match="segmenter='felzenszwalb'"):
        resolve_dataset_config(dest, segmenter="felzenszwalb")


def test_mark_source_quarantines_bad_bytes_and_reuses_existing_outputs(tmp_path: Path):
    root, dest = tmp_path / "raw", str(tmp_path / "ds")
    root.mkdir()
    (root / "good.jpg").write_bytes(next(iter(derived_photos(1).values())))
    (root / "bad.jpg").write_bytes(bad_files()["truncated.jpg"][0])
    (root / "copy.jpg").write_bytes((root / "good.jpg").read_bytes())
    config = resolve_dataset_config(
        dest, segmenter="slic", segmenter_params={"n_segments": 12}, style={"short_side": 96}
    )
    segmenter = build_segmenter(config.segmenter, config.segmenter_params)
    rows = {Path(s.uri).name: mark_source(s, dest, config, segmenter) for s in list_sources(str(root))}
    assert rows["bad.jpg"].status == "failed" and "truncated" in rows["bad.jpg"].error
    good, copy = rows["good.jpg"], rows["copy.jpg"]
    assert good.status == "marked" and good.json_uri == copy.json_uri, "same bytes, one stored copy"
    stamp = Path(good.json_uri).stat().st_mtime_ns
    good_source = next(s for s in list_sources(str(root)) if s.uri.endswith("good.jpg"))
    again = mark_source(good_source, dest, config, segmenter)
    assert again == good and Path(good.json_uri).stat().st_mtime_ns == stamp, "existing outputs are reused"
    assert sorted(p.name for p in (tmp_path / "ds" / "marks").iterdir()) == sorted(
        [Path(good.json_uri).name, Path(good.marked_uri).name]
    )
