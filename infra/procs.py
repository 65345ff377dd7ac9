"""Process, port and file primitives under infra/service.py and the infra scripts (standard
library only: the scripts run before anything else is installed)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class ProcessError(RuntimeError):
    """A process that could not be stopped."""


def proc_state(pid: int) -> str | None:
    """The /proc state letter of pid (R, S, Z, ...) or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped: PID 1 here reaps late) is gone."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def port_free(host: str, port: int) -> bool:
    """Whether `port` can be bound on `host`.

    With SO_REUSEADDR, like the servers' own listeners: connections of a previous run
    lingering in TIME_WAIT must not make its port look taken.
    """
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def terminate(pid: int, timeout: float, name: str = "process") -> str:
    """SIGTERM the process and its group, wait `timeout`, then SIGKILL; returns how it ended."""

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # daemons are started in their own session: pgid == pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    send(signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return "terminated"
    log.warning("%s (pid %d) did not stop within %.0f s of SIGTERM; sending SIGKILL", name, pid, timeout)
    send(signal.SIGKILL)
    if _wait_gone(pid, 5):
        return "killed"
    raise ProcessError(f"{name} (pid {pid}) survived SIGKILL; check `ps -o stat {pid}`")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def ancestors() -> set[int]:
    """This process and its ancestors: never to be signalled by our own clean-up."""
    pids, pid = {os.getpid()}, os.getpid()
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        pids.add(pid)
    return pids


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `path` whole or not at all, with `mode` from the start (0o600 for files holding
    keys: they are never readable by others, not even for a moment)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)  # os.open's mode is masked by the umask
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Serialise up/down on one state folder (two `up`s at once would start everything twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
