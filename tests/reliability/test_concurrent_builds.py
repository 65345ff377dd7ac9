"""Two real `som dataset build` runs with different sources into one dest whose commits overlap
(issue 11 item 1): both must exit 0 and `_latest` must hold every row of both.

Started together, the two builds rarely reached their commits at the same moment, so the test
passed on the pre-fix code too. Now it forces the overlap without any test hook in the code:
each build is paused (SIGSTOP) when it logs that its shards are done (its commit follows the
Dask cluster's close), the SeaweedFS server is frozen, both builds are resumed so their first
commit requests queue at the frozen server, and the server is thawed: both read `_latest`
before either writes it. A plain write of `_latest` then loses one build's rows; the
compare-and-swap commit (som/dataset/commit.py) refuses the later swap and merges again."""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import time

import pytest

from som import storage
from som.dataset.manifest import ManifestRow, read_manifest, write_manifest
from tests.helpers.chaos import OutputWatch, cli_env, som_command
from tests.helpers.image_sets import derived_photos
from tests.helpers.s3 import use_s3

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

SHARDS_DONE = "shards done"  # tasks/marking.run_shards, logged before the cluster closes
SEED_ROWS = 3000  # an existing dataset being refreshed: its merge widens each commit's window


def seed_rows() -> list[ManifestRow]:
    return [
        ManifestRow(f"s3://elsewhere/old/{i:05d}.jpg", f"fp-{i}", None, "failed", error="seed")
        for i in range(SEED_ROWS)
    ]


def test_two_cli_builds_committing_at_once_keep_both_builds_rows(prefect_api, seaweed_factory, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    server = seaweed_factory(tmp_path / "s3")
    use_s3(monkeypatch, server)
    sources = {"nightly": derived_photos(3), "manual": derived_photos(3, start=50)}
    for name, images in sources.items():
        storage.write_many({server.url("ds", name, f"{name}-{k}"): data for k, data in images.items()})
    dest = server.url("ds", "dest")
    write_manifest(dest, seed_rows())
    builds: dict[str, tuple[subprocess.Popen, OutputWatch]] = {}
    try:
        for name in sources:
            env = cli_env(PREFECT_API_URL.value(), server.env, tmp_path / f"prefect-{name}")
            command = som_command(server.url("ds", name), dest, workers=1)
            command.insert(1, "-v")  # the commit's INFO lines: "merging again" shows the overlap
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
            pause = functools.partial(os.kill, process.pid, signal.SIGSTOP)
            builds[name] = process, OutputWatch(process, triggers={SHARDS_DONE: pause})
        for name, (_, output) in builds.items():
            assert output.wait_for(SHARDS_DONE), f"{name} never finished its shards:\n{output.text()[-3000:]}"
        os.kill(server.pid, signal.SIGSTOP)
        try:
            for process, _ in builds.values():
                os.kill(process.pid, signal.SIGCONT)
            time.sleep(3)  # both close their clusters and block on their first commit request
        finally:
            os.kill(server.pid, signal.SIGCONT)
        for name, (process, output) in builds.items():
            assert process.wait(timeout=240) == 0, f"{name}:\n{output.text()[-3000:]}"
    finally:
        for process, _ in builds.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # its Dask workers too (own session)
                process.wait()
    logs = {name: output.text() for name, (_, output) in builds.items()}
    uris = [row.source_uri for row in read_manifest(dest)]
    assert len(uris) == len(set(uris)), "no row duplicated"
    built = [uri for uri in uris if not uri.startswith("s3://elsewhere/")]
    assert sorted(uri.rsplit("/", 2)[1] for uri in built) == ["manual"] * 3 + ["nightly"] * 3, built
    assert len(uris) == SEED_ROWS + 6
    retried = [name for name, text in logs.items() if "merging again" in text]
    log.info("builds whose first swap of _latest was refused: %s", retried)
    commit_lines = [
        f"{name}: {line}"
        for name, text in logs.items()
        for line in text.splitlines()
        if any(word in line for word in ("commit", "_latest", "conditional", SHARDS_DONE))
    ]
    assert retried, (
        "the two commits did not overlap (neither had to merge again): the test lost its race\n"
        + "\n".join(commit_lines)
    )
