"""Finding the Prefect servers a test started, by the PREFECT_HOME it gave them (never another's)."""

from __future__ import annotations

from pathlib import Path

import psutil


def servers_with_home(home: Path) -> list[psutil.Process]:
    """Live `prefect server` processes whose PREFECT_HOME is `home`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "server" in (process.info["cmdline"] or []) and process.environ().get("PREFECT_HOME") == str(home):
                found.append(process)
        except psutil.Error:
            continue
    return found
