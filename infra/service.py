"""One supervisor for every local process somflow starts: SeaweedFS (storage/seaweed.py), the
Slurm daemons (slurm/cluster.py), the stack's Prefect server and worker (stack.py) and the
temporary Prefect server of a CLI run (flows/prefect_api.py).

Why one: each of them needs the same five things, and each had grown its own copy of them.

- spawn: in its own session (a Ctrl-C in the terminal is not theirs), output appended to a log;
- a state file: the pid and the process's start time (from /proc), so that a pid recycled by
  another process is never taken for the service, whatever its command line became after exec;
- wait until ready: a check polled until it passes; if the process exits or the time runs out
  the error ends with the tail of its logs;
- stop: SIGTERM to the process group (daemons' children included), SIGKILL after a timeout;
- an owner watchdog: a detached process that takes the service (or a whole stack, through its
  `down` command) away once a given process exits, so a `kill -9` of a test session or a CLI
  run leaves nothing running.

Standard library only: the infra scripts run before anything else is installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from infra.procs import alive, ancestors, terminate, write_atomic

log = logging.getLogger(__name__)
T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[1]
WATCH_POLL_S = 0.5


class ServiceError(RuntimeError):
    """A service that did not start or answer; the message ends with its log tail."""


# ----------------------------------------------------------------------------- state files


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def record_process(path: Path, pid: int, command: Sequence[str]) -> None:
    """Write the state file of a process just started."""
    record = {"pid": pid, "start_ticks": start_ticks(pid), "command": list(command)}
    write_atomic(path, json.dumps(record) + "\n")


def recorded_pid(path: Path) -> int | None:
    """The pid in a state file while that very process lives; else None (a stale file is removed)."""
    try:
        record = json.loads(path.read_text())
        pid, ticks = int(record["pid"]), record["start_ticks"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if alive(pid) and start_ticks(pid) == ticks:
        return pid
    path.unlink(missing_ok=True)
    return None


def tail(paths: Sequence[Path], lines: int = 20) -> str:
    """The last lines of each existing log, headed by its path."""
    out = []
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                out.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(out) or "(no log)"


# ----------------------------------------------------------------------------- the supervisor


@dataclass
class Service:
    """One supervised process.

    name: what messages call it ("weed", "slurmctld", "the Prefect server").
    command: its argv; log: where its stdout and stderr are appended.
    state: its state file (pid + start time); `<state>.watchdog` is its owner watchdog's.
    logs: further logs the process writes itself (a daemon's LogFile), tailed in errors too.
    """

    name: str
    command: Sequence[str]
    log: Path
    state: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    logs: Sequence[Path] = field(default_factory=tuple)

    @property
    def watchdog_state(self) -> Path:
        return self.state.with_name(self.state.name + ".watchdog")

    def start(self) -> int:
        """Spawn it in its own session, output appended to `log`; returns its pid."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                list(self.command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else dict(self.env),
                cwd=self.cwd,
                start_new_session=True,
                close_fds=True,
            )
        proc.returncode = 0  # left running on purpose: no "still running" warning from Popen
        record_process(self.state, proc.pid, self.command)
        log.debug("started %s (pid %d): %s", self.name, proc.pid, " ".join(self.command))
        return proc.pid

    def pid(self) -> int | None:
        """Its pid while it runs, else None."""
        return recorded_pid(self.state)

    def tail(self, lines: int = 20) -> str:
        return tail([*self.logs, self.log], lines)

    def wait_ready(self, check: Callable[[], T], timeout: float, what: str | None = None) -> T:
        """Poll `check` until it returns a true value (returned); an exception raised by `check`
        counts as "not yet" and is named if the time runs out. Fails at once if the process exits."""
        what = what or self.name
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                result = check()
            except Exception as exc:  # noqa: BLE001 - not ready yet; the last one is reported
                last = exc
            else:
                if result:
                    return result
            if self.pid() is None:
                raise ServiceError(f"{what} exited while starting; its log ends with:\n{self.tail()}")
            if time.monotonic() >= deadline:
                reason = f" (last error: {last})" if last is not None else ""
                raise ServiceError(
                    f"{what} was not ready within {timeout:.0f} s{reason}; its log ends with:\n{self.tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15, *, interrupts: int = 0) -> str:
        """Stop it and its process group: `interrupts` SIGINTs first (3 s apart; some programs
        stop cleanly only that way), then SIGTERM, SIGKILL after `timeout`. Returns how it ended."""
        stop_watchdog(self.watchdog_state)
        pid = self.pid()
        if pid is None:
            self.state.unlink(missing_ok=True)
            return "not-running"
        interrupted = any(_interrupt(pid) for _ in range(interrupts))
        how = "interrupted" if interrupted else terminate(pid, timeout, name=self.name)
        self.state.unlink(missing_ok=True)
        return how

    def watch_owner(self, owner_pid: int) -> None:
        """Stop this service once process `owner_pid` exits (a detached watchdog)."""
        start_watchdog(owner_pid, self.watchdog_state, target=self.state)


def _interrupt(pid: int) -> bool:
    """SIGINT, as a Ctrl-C would; whether the process was gone 3 s later."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    return _gone_within(pid, 3)


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


# ----------------------------------------------------------------------------- owner watchdog


def start_watchdog(
    owner_pid: int, state: Path, *, target: Path | None = None, down: Sequence[str] | None = None
) -> None:
    """A detached `python -m infra.service watch` that, once `owner_pid` exits, runs `down` (a
    script's own clean-up, for services that need more than a signal) or else stops the process
    of the `target` state file. It exits by itself when the target stops first. Its own state
    goes to `state`; a previous watchdog there is replaced."""
    stop_watchdog(state)
    command = [sys.executable, "-m", "infra.service", "watch", "--owner", str(owner_pid)]
    if target is not None:
        command += ["--target", str(target)]
    if down:
        command += ["--", *down]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        start_new_session=True,
        close_fds=True,
    )
    proc.returncode = 0  # detached on purpose
    record_process(state, proc.pid, command)


def stop_watchdog(state: Path) -> None:
    """Stop the watchdog of this state file, unless it is what runs this (its `down`)."""
    pid = recorded_pid(state)
    if pid is not None:
        if pid in ancestors():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _gone_within(pid, 5)
    state.unlink(missing_ok=True)


def watch(owner_pid: int, target: Path | None, down: Sequence[str]) -> str:
    """The watchdog's loop; returns what it did."""
    while alive(owner_pid):
        if target is not None and recorded_pid(target) is None:
            return "target exited"
        time.sleep(WATCH_POLL_S)
    log.info("owner %d exited", owner_pid)
    if down:
        subprocess.run(list(down), stdin=subprocess.DEVNULL, check=False)
        return "ran " + " ".join(down)
    if target is None:
        return "nothing to stop"
    pid = recorded_pid(target)
    if pid is None:
        return "target exited"
    how = terminate(pid, timeout=15)
    target.unlink(missing_ok=True)
    return how


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m infra.service", description="internal: the owner watchdog")
    parser.add_argument("command", choices=("watch",))
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--target", type=Path, help="state file of the process to stop")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args, down = parser.parse_args(argv[:cut]), argv[cut + 1 :]  # after --: the command taking all down
    logging.basicConfig(level=logging.INFO, format="watchdog: %(message)s")
    log.info(watch(args.owner, args.target, down))
    return 0


if __name__ == "__main__":
    sys.exit(main())
