"""Two real `som dataset build` runs with different sources into one dest at the same time
(issue 11 item 1): both must exit 0 and `_latest` must hold every row of both.

An end-to-end check of the CLI path, not a reliable reproducer: whether the two runs' read and
commit windows overlap depends on timing (it passed on the pre-fix code once here); the
deterministic races are in test_concurrent_commits.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from som import storage
from som.dataset.manifest import read_manifest
from tests.helpers.s3 import use_s3
from tests.helpers.image_sets import derived_photos

pytestmark = pytest.mark.slow


def test_two_cli_builds_into_one_dest_keep_both_builds_rows(s3_server, s3_prefix, tmp_path, monkeypatch):
    use_s3(monkeypatch, s3_server)
    sources = {"nightly": derived_photos(3), "manual": derived_photos(3, start=50)}
    for name, images in sources.items():
        storage.write_many({storage.join(s3_prefix, name, f"{name}-{k}"): data for k, data in images.items()})
    dest = storage.join(s3_prefix, "ds")
    som = shutil.which("som") or str(Path(sys.executable).with_name("som"))
    runs = []
    for name in sources:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(tmp_path / name), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        command = [som, "dataset", "build", storage.join(s3_prefix, name), dest, "--segmenter", "slic",
                   "--param", "n_segments=12", "--short-side", "96", "--workers", "1", "--shard-size", "3"]
        runs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
    uris = [row.source_uri for row in read_manifest(dest)]
    assert len(uris) == len(set(uris)) == 6, uris
    assert {uri.rsplit("/", 2)[1] for uri in uris} == {"nightly", "manual"}
