"""Helpers of the operate tests: the local stack as infra/stack.py starts it, seen from outside
(its state folder, its stack.env, its processes, its Prefect API). The session fixtures that
bring it up are tests/plugins/stack.py."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO_ROOT / "infra" / "stack.py"
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts" / "operate"
PHOTOS = sorted((REPO_ROOT / "tests" / "data").glob("*.jpg"))
FAST_MARKING = {"segmenter": "slic", "segmenter_params": {"n_segments": 12}, "short_side": 96, "workers": 1}


def read_env_file(path: Path) -> dict[str, str]:
    """`export NAME=value` lines (values shell-quoted) as a dict; PATH lines are left out."""
    values = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            if name != "PATH":
                values[name] = value
    return values


def stack_processes(state_dir: Path) -> list[psutil.Process]:
    """Live processes that belong to the stack of `state_dir` (found by its marker variable)."""
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.pid != os.getpid()
                and process.status() != psutil.STATUS_ZOMBIE
                and process.environ().get("SOMFLOW_STACK") == str(state_dir)
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def run_stack(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@dataclass
class Stack:
    """A running stack: where its state is and the environment its stack.env gives clients."""

    state_dir: Path
    report: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return self.env["PREFECT_API_URL"]

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def client_env(self) -> dict[str, str]:
        """A shell that sourced stack.env, with its own PREFECT_HOME (not the user's ~/.prefect)."""
        return {
            **os.environ,
            **self.env,
            "PATH": os.environ.get("PATH", "") + ":/usr/sbin",
            "PREFECT_HOME": str(self.state_dir.parent / "client-prefect-home"),
        }

    def prefect(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The `prefect` CLI as a user runs it from the repository root."""
        cmd = [str(Path(sys.executable).with_name("prefect")), *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.client_env(), cwd=REPO_ROOT, check=False
        )

    def api(self, method: str, path: str, body: dict | None = None) -> Any:
        response = httpx.request(method, f"{self.api_url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DatasetRun:
    """One completed run of the dataset deployment and what it was asked to do."""

    flow_run: dict[str, Any]
    source: str
    dest: str
    output: str
