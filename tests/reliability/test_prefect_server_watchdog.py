"""Issue 11 item 5: the temporary Prefect server a CLI run starts dies with the run, even when
the run is killed with -9 (no finally block runs then)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.prefect_servers import servers_with_home

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import sys
from flows.prefect_api import prefect_api
with prefect_api() as url:
    print(url, flush=True)
    sys.stdin.read()  # hold the server until killed
"""


def test_kill_9_of_the_owner_stops_its_prefect_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), "the server came up"
        servers = servers_with_home(tmp_path / "prefect")
        assert servers, "the temporary server runs while its owner does"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 30
        while servers_with_home(tmp_path / "prefect") and time.monotonic() < deadline:
            time.sleep(0.25)
        left = servers_with_home(tmp_path / "prefect")
        assert not left, f"server outlived its owner: {[p.pid for p in left]}"
    finally:
        child.kill()
        for process in servers_with_home(tmp_path / "prefect"):  # only ours (its PREFECT_HOME)
            process.kill()
