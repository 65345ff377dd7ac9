"""`som dataset build` as a user runs it: no PREFECT_API_URL, so it brings its own server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from som import storage
from som.dataset.manifest import read_manifest
from tests.helpers.image_sets import bad_files, derived_photos
from tests.helpers.prefect_servers import servers_with_home
from tests.helpers.s3 import use_s3

pytestmark = pytest.mark.slow


def test_cli_builds_into_s3_with_its_own_prefect_server(s3_server, s3_prefix, tmp_path, monkeypatch):
    use_s3(monkeypatch, s3_server)
    images = {**derived_photos(3), "empty.jpg": bad_files()["empty.jpg"][0]}
    storage.write_many({storage.join(s3_prefix, "raw", name): data for name, data in images.items()})
    dest = storage.join(s3_prefix, "ds")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    som = shutil.which("som") or str(Path(sys.executable).with_name("som"))
    command = [
        som,
        "dataset",
        "build",
        storage.join(s3_prefix, "raw"),
        dest,
        "--segmenter",
        "slic",
        "--param",
        "n_segments=12",
        "--short-side",
        "96",
        "--workers",
        "1",
        "--shard-size",
        "2",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 images seen, 4 new: 3 marked, 0 skipped, 1 quarantined" in done.stdout
    assert f"outputs: {dest}/marks/" in done.stdout
    assert "Error logging to API" not in done.stderr, "logs were flushed before the server stopped"
    rows = read_manifest(dest)
    assert sorted(row.status for row in rows) == ["failed", "marked", "marked", "marked"]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.startswith("nothing new"), again.stdout
    assert not servers_with_home(tmp_path / "prefect"), "the CLI stopped the server it started"
