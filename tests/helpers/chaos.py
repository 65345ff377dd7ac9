"""Fault injection for the chaos suite: a small image set, a watcher that fires once the first
mark objects appear, process-tree handling for killed CLI runs, and the invariant check."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from som import storage
from som.dataset.audit import AuditReport, audit
from som.dataset.manifest import read_manifest
from tests.helpers.image_sets import bad_files, derived_photos

log = logging.getLogger(__name__)

BAD = ("truncated.jpg", "not_an_image.png")
# slow enough per image (200 px, 40 segments, 2 images a shard) that a fault lands mid-build
SLOW_STYLE = {"segmenter": "slic", "segmenter_params": {"n_segments": 40}, "short_side": 200, "shard_size": 2}


def chaos_images(good: int = 14) -> tuple[dict[str, bytes], dict[str, tuple[bytes, str]]]:
    """`good` distinct photos and two known-bad files (with a word their reason must contain)."""
    bad = bad_files()
    return derived_photos(good, size=200), {name: bad[name] for name in BAD}


def upload(source: str, good: dict[str, bytes], bad: dict[str, tuple[bytes, str]]) -> None:
    storage.write_many(
        {storage.join(source, name): data for name, data in {**good, **{n: d for n, (d, _) in bad.items()}}.items()}
    )


def mark_objects(dest: str) -> dict[str, dict]:
    """Objects under <dest>/marks/ with their listing details (LastModified changes on rewrite)."""
    fs, root = storage.resolve(storage.join(dest, "marks"))
    fs.invalidate_cache(root)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {path: info for path, info in found.items() if info.get("type") != "directory"}


def when_marks_appear(
    dest: str, action: Callable[[], None], at_least: int = 2, timeout_s: float = 120
) -> threading.Thread:
    """Run `action` in a thread once `at_least` mark objects exist (the build is under way)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if len(mark_objects(dest)) >= at_least:
                    break
            except OSError:  # a listing racing with writes, or the server being down: look again
                pass
            time.sleep(0.05)
        else:
            log.warning("no mark objects under %s within %.0f s; injecting anyway", dest, timeout_s)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def wait_for_marks(dest: str, at_least: int = 2, timeout_s: float = 120) -> None:
    """Block until `at_least` mark objects exist under `dest`."""
    when_marks_appear(dest, lambda: None, at_least, timeout_s).join()


def som_command(source: str, dest: str, workers: int = 2) -> list[str]:
    """`som dataset build` with the slow-enough style of SLOW_STYLE."""
    som = shutil.which("som") or str(Path(sys.executable).with_name("som"))
    return [
        som,
        "dataset",
        "build",
        source,
        dest,
        "--segmenter",
        "slic",
        "--param",
        "n_segments=40",
        "--short-side",
        "200",
        "--shard-size",
        "2",
        "--workers",
        str(workers),
    ]


def cli_env(api_url: str, s3_env: dict[str, str], home: Path) -> dict[str, str]:
    """Environment for a CLI subprocess: the test's Prefect API (no server start per run) and S3."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env.update(s3_env, PREFECT_API_URL=api_url, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def reap(processes: list[psutil.Process], grace_s: float = 10) -> list[int]:
    """Wait up to `grace_s` for `processes` to exit; SIGKILL and return the pids that did not,
    so the next run never races a leftover worker of the killed one."""
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        log.warning("pid %d (%s) outlived its killed parent: killing it", process.pid, process.name())
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)
    return [process.pid for process in alive]


def interrupt_cli(process: subprocess.Popen, sig: signal.Signals, wait_s: float = 60) -> tuple[int | None, list[int]]:
    """Send `sig` to the CLI process alone; return its exit code (None: it did not exit within
    `wait_s` and was killed) and the pids of descendants that outlived it."""
    children = descendants(process.pid)
    os.kill(process.pid, sig)
    try:
        code: int | None = process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        code = None
        children += descendants(process.pid)
        process.kill()
        process.wait()
    return code, reap(children)


class OutputWatch:
    """Reads a CLI's merged stdout+stderr in a thread, keeps every line, and lets a test block
    until a line containing some text appears (a deterministic point to inject a fault).

    `triggers` maps a text to an action run by the reading thread itself, as soon as the first
    line containing it is read: no waiting test thread between the line and the fault."""

    def __init__(self, process: subprocess.Popen, triggers: dict[str, Callable[[], None]] | None = None) -> None:
        self.lines: list[str] = []
        self._pending = dict(triggers or {})
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            for text in [text for text in self._pending if text in line]:
                self._pending.pop(text)()
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, timeout_s: float = 180) -> bool:
        """Whether a line containing `text` appeared within `timeout_s`."""
        with self._changed:
            return self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout_s)

    def text(self) -> str:
        """Everything read so far (all of it once the process has exited and been joined)."""
        self._thread.join(timeout=10)
        with self._changed:
            return "".join(self.lines)


@contextlib.contextmanager
def sigint_as_in_a_terminal() -> Iterator[None]:
    """Processes started in the block get SIGINT's default action, as a terminal's foreground
    job does, even when pytest itself was started with SIGINT ignored (a background job of a
    script: `pytest ... &`), which children inherit and which makes Python drop SIGINT.

    A handler installed here (not SIG_IGN) is reset to the default by exec in children."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def dask_workers(root: int | None = None) -> list[psutil.Process]:
    """Live Dask worker processes (multiprocessing spawn children) under `root` (default: us)."""
    found = []
    for process in descendants(root or os.getpid()):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in p for p in process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def assert_invariants(dest: str, good: dict[str, bytes], bad: dict[str, tuple[bytes, str]]) -> AuditReport:
    """The suite's invariants: a clean audit, every good image marked once, every bad one failed
    with its reason, and exactly one image + one JSON object per good image."""
    report = audit(dest)
    assert report.clean, report
    assert report.rows == len(good) + len(bad), report.summary()
    assert report.ok == len(good), report.summary()
    rows = {row.source_uri.rsplit("/", 1)[1]: row for row in read_manifest(dest)}
    assert sorted(rows) == sorted([*good, *bad])
    for name in good:
        assert rows[name].status == "marked" and rows[name].n_marks > 0, (name, rows[name])
    for name, (_, reason) in bad.items():
        assert rows[name].status == "failed" and reason in (rows[name].error or ""), (name, rows[name])
    assert len(mark_objects(dest)) == 2 * len(good)
    return report
