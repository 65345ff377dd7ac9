#!/usr/bin/env python3
"""Soak test for `som dataset build`: random faults for M minutes, then audit after each.

Each round uploads fresh images to a local SeaweedFS, starts `som dataset build` and injects
one fault at a random moment (kill -9 of the CLI, SIGINT, SeaweedFS outage, a concurrent
second build into the same DEST, or kill -9 of a Dask worker). The build is then rerun
without faults and the destination audited (som/dataset/audit.py) until it is clean.

    .venv/bin/python benchmarks/soak.py --minutes 4 --images 12 --seed 0

Everything it starts (SeaweedFS, a Prefect server, builds in their own process groups) is
stopped at the end, on Ctrl-C and on crashes (try/finally + atexit + owner watchdogs).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import logging
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from flows.prefect_api import healthy  # noqa: E402  (after the repo is on the path)
from infra.service import Service  # noqa: E402
from som.dataset.audit import audit as audit_dest  # noqa: E402

SEAWEED = REPO / "infra" / "storage" / "seaweed.py"
BIN = Path(sys.executable).parent
BUCKET = "soak"
KINDS = ("kill9", "sigint", "s3_outage", "concurrent", "worker_kill")
BUILD_TIMEOUT_S = 240.0
log = logging.getLogger("soak")


# ----------------------------------------------------------------------------- processes


class Processes:
    """Everything this script started, so that any exit path can stop it."""

    def __init__(self) -> None:
        self.groups: list[subprocess.Popen] = []
        self.prefect: Service | None = None
        self.seaweed_state: Path | None = None

    def kill_group(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal a build's whole process group (it was started with its own session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def cleanup(self) -> None:
        """Stop builds, the Prefect server and SeaweedFS; safe to call twice."""
        for proc in self.groups:
            self.kill_group(proc)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self.groups.clear()
        if self.prefect is not None:
            self.prefect.stop(15)
            self.prefect = None
        if self.seaweed_state is not None:
            seaweed("down", "--state", str(self.seaweed_state), check=False)
            self.seaweed_state = None


PROCS = Processes()


def seaweed(*args: str, check: bool = True, timeout: float = 90) -> dict[str, Any]:
    """Run infra/storage/seaweed.py; returns its JSON report ({} when it printed none)."""
    result = subprocess.run(
        [sys.executable, str(SEAWEED), *args, "--json"], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"seaweed.py {args[0]} failed: {result.stdout}{result.stderr}")
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def seaweed_up(state: Path, port: int | None = None) -> dict[str, Any]:
    """Start (or restart, same data dir and port) SeaweedFS; stops itself if we die."""
    args = ["up", "--state", str(state), "--bucket", BUCKET, "--stop-with-pid", str(os.getpid())]
    if port:
        args += ["--port", str(port)]
    return seaweed(*args)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_prefect(workdir: Path, env: dict[str, str]) -> str:
    """One Prefect server for all builds (each CLI would otherwise start its own)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    PROCS.prefect = Service(
        "the Prefect server",
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        log=workdir / "prefect.log",
        state=workdir / "prefect.pid",
        env={**env, "PREFECT_UI_ENABLED": "false"},
    )
    PROCS.prefect.start()
    PROCS.prefect.watch_owner(os.getpid())
    PROCS.prefect.wait_ready(lambda: healthy(url), 120)
    return url


# ----------------------------------------------------------------------------- images


def make_image(rng: random.Random) -> bytes:
    """A small PNG with a few coloured rectangles."""
    from PIL import Image, ImageDraw

    w, h = rng.randint(160, 320), rng.randint(160, 320)
    img = Image.new("RGB", (w, h), tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 5)):
        x0, y0 = rng.randint(0, w - 40), rng.randint(0, h - 40)
        x1, y1 = rng.randint(x0 + 20, w), rng.randint(y0 + 20, h)
        draw.rectangle([x0, y0, x1, y1], fill=tuple(rng.randint(0, 255) for _ in range(3)))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def upload_round(rng: random.Random, round_no: int, count: int, truncated: int) -> int:
    """Upload `count` good images (half under a/, half under b/) plus `truncated` broken
    JPEGs to s3://soak/src/rNNN/; returns the number of good images."""
    from som import storage

    fs, _ = storage.resolve(f"s3://{BUCKET}/src")
    objects: dict[str, bytes] = {}
    for i in range(count):
        part = "a" if i % 2 == 0 else "b"
        objects[f"{BUCKET}/src/r{round_no:03d}/{part}/img{i:03d}.png"] = make_image(rng)
    for i in range(truncated):
        good = io.BytesIO()
        from PIL import Image

        Image.open(io.BytesIO(make_image(rng))).convert("RGB").save(good, format="JPEG")
        objects[f"{BUCKET}/src/r{round_no:03d}/a/broken{i}.jpg"] = good.getvalue()[: len(good.getvalue()) // 3]
    fs.pipe(objects)
    return count


# ----------------------------------------------------------------------------- builds


@dataclass
class Build:
    """One running `som dataset build` and its memory samples."""

    proc: subprocess.Popen
    name: str
    max_rss: int = 0
    pids: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def monitor(self) -> None:
        """Sample the RSS of the whole process tree every 0.3 s."""
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set() and self.proc.poll() is None:
            total = 0
            with contextlib.suppress(psutil.Error):
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                        self.pids.add(p.pid)
            self.max_rss = max(self.max_rss, total)
            self._stop.wait(0.3)

    def wait(self, timeout: float = BUILD_TIMEOUT_S) -> int:
        """Exit code, or -999 after a timeout (the group is then killed)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s: no exit after %.0f s, killing its group", self.name, timeout)
            PROCS.kill_group(self.proc)
            self.proc.wait()
            code = -999
        self._stop.set()
        return code

    def leftovers(self, grace: float = 10.0) -> int:
        """Processes of this build still alive `grace` s after its CLI exited (then killed)."""
        deadline = time.monotonic() + grace
        alive: list[psutil.Process] = []
        while time.monotonic() < deadline:
            alive = []
            for pid in self.pids - {self.proc.pid}:
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    if p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(p)
            if not alive:
                return 0
            time.sleep(0.5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        PROCS.kill_group(self.proc)
        return len(alive)


def start_build(
    source: str, dest: str, env: dict[str, str], logs: Path, name: str, workers: int, shard_size: int
) -> Build:
    """Start the CLI in its own session (process group) with output to logs/<name>.log."""
    command = [
        str(BIN / "som"),
        "dataset",
        "build",
        source,
        dest,
        "--segmenter",
        "slic",
        "--workers",
        str(workers),
        "--shard-size",
        str(shard_size),
        "--short-side",
        "256",
    ]
    out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 (closed by the child's exit)
    proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    PROCS.groups.append(proc)
    build = Build(proc, name)
    threading.Thread(target=build.monitor, daemon=True).start()
    return build


def dask_workers(build: Build) -> list[psutil.Process]:
    """Dask worker processes in the CLI's tree (spawned by the nannies)."""
    found = []
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process(build.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(p.cmdline())
                if "resource_tracker" in cmd or "prefect" in cmd.split(" ")[0]:
                    continue
                if any(k in cmd for k in ("dask", "distributed", "spawn_main")):
                    found.append(p)
    return found


# ----------------------------------------------------------------------------- soak


@dataclass
class KindStats:
    """Totals per fault kind."""

    faults: int = 0
    images: int = 0
    duplicates: int = 0
    losses: int = 0
    max_rss: int = 0
    orphans: int = 0
    unrecovered: int = 0
    missed: int = 0  # rounds where the build finished before the fault
    recover_s: list[float] = field(default_factory=list)
    fault_exit: list[int] = field(default_factory=list)


def inject(kind: str, rng: random.Random, build: Build, args: argparse.Namespace, ctx: dict[str, Any]) -> float | None:
    """Wait a random moment, inject `kind`; returns the fault time (monotonic), or None when
    the build finished before the fault could be injected."""
    delay = rng.uniform(1.5, 6.0)  # a 12-image build takes ~7-10 s here
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if build.proc.poll() is not None:
            return None
        time.sleep(0.1)
    if kind == "kill9":
        os.kill(build.proc.pid, signal.SIGKILL)
    elif kind == "sigint":
        PROCS.kill_group(build.proc, signal.SIGINT)  # what Ctrl-C in a terminal does
    elif kind == "s3_outage":
        at = time.monotonic()
        seaweed("down", "--state", str(ctx["state"]))
        time.sleep(rng.uniform(2.0, 6.0))
        seaweed_up(ctx["state"], port=ctx["port"])
        return at
    elif kind == "concurrent":
        second = start_build(
            ctx["subset"], ctx["dest"], ctx["env"], ctx["logs"], f"{build.name}-second", args.workers, args.shard_size
        )
        ctx["second"] = second
    elif kind == "worker_kill":
        end = time.monotonic() + 30
        while not (workers := dask_workers(build)):
            if build.proc.poll() is not None or time.monotonic() > end:
                return None
            time.sleep(0.2)
        victim = rng.choice(workers)
        log.info("killing Dask worker pid %d (%s)", victim.pid, " ".join(victim.cmdline())[:80])
        victim.kill()
    return time.monotonic()


def soak(args: argparse.Namespace) -> dict[str, KindStats]:
    """The soak loop; returns per-kind statistics."""
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="somflow-soak-")).resolve()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state = workdir / "s3"
    PROCS.seaweed_state = state
    report = seaweed_up(state)
    port = int(report["port"])
    from som.storage import clear_filesystems, read_config_file

    settings = read_config_file(state / "s3.env")
    s3_env = {
        "AWS_ACCESS_KEY_ID": settings.key or "",
        "AWS_SECRET_ACCESS_KEY": settings.secret or "",
        "AWS_DEFAULT_REGION": report.get("region", "us-east-1"),
        "AWS_ENDPOINT_URL": report["endpoint_url"],
    }
    os.environ.update(s3_env)
    clear_filesystems()
    env = {
        **os.environ,
        **s3_env,
        "PREFECT_HOME": str(workdir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PREFECT_API_URL", None)
    log.info("SeaweedFS at %s (state %s); starting Prefect", report["endpoint_url"], state)
    env["PREFECT_API_URL"] = start_prefect(workdir, env)
    dest = f"s3://{BUCKET}/dest"
    source = f"s3://{BUCKET}/src"
    stats: dict[str, KindStats] = defaultdict(KindStats)
    expected_good = 0
    end = time.monotonic() + args.minutes * 60
    round_no = 0
    while time.monotonic() < end:
        round_no += 1
        kind = rng.choice(args.kinds)
        new = upload_round(rng, round_no, args.images, truncated=2 if round_no == 1 else 0)
        expected_good += new
        name = f"r{round_no:03d}-{kind}"
        ctx: dict[str, Any] = {
            "state": state,
            "port": port,
            "dest": dest,
            "env": env,
            "logs": logs,
            "subset": f"{source}/r{round_no:03d}/b",
        }
        build = start_build(source, dest, env, logs, name, args.workers, args.shard_size)
        fault_at = inject(kind, rng, build, args, ctx)
        code = build.wait()
        st = stats[kind]
        st.max_rss = max(st.max_rss, build.max_rss)
        st.orphans += build.leftovers()
        if "second" in ctx:
            ctx["second"].wait()
            st.max_rss = max(st.max_rss, ctx["second"].max_rss)
            st.orphans += ctx["second"].leftovers()
        if fault_at is None:
            log.info("round %d: %s not injected (build finished first, exit %d)", round_no, kind, code)
            fault_at = time.monotonic()
            kind_injected = False
            st.missed += 1
        else:
            st.faults += 1
            st.fault_exit.append(code)
            kind_injected = True
        # recovery: rerun without faults until the audit is clean (at most 3 tries)
        recovered_at: float | None = None
        audit = None
        for attempt in range(3):
            rec = start_build(source, dest, env, logs, f"{name}-recover{attempt}", args.workers, args.shard_size)
            rec_code = rec.wait()
            st.max_rss = max(st.max_rss, rec.max_rss)
            st.orphans += rec.leftovers(grace=5.0)
            clear_filesystems()
            try:
                audit = audit_dest(dest)
            except Exception as exc:  # noqa: BLE001
                log.warning("audit failed: %s: %s", type(exc).__name__, exc)
                continue
            if rec_code == 0 and audit.clean:
                recovered_at = time.monotonic()
                break
            log.info("round %d: recovery %d exit %d, audit clean=%s", round_no, attempt, rec_code, audit.clean)
        losses = expected_good - (audit.ok if audit else 0)
        dups = len(audit.duplicate_sources) if audit else 0
        st.images += new
        st.losses = max(st.losses, losses)  # cumulative across rounds: report the worst seen
        st.duplicates = max(st.duplicates, dups)
        if recovered_at is None:
            st.unrecovered += 1
        elif kind_injected:
            st.recover_s.append(recovered_at - fault_at)
        log.info(
            "round %d %-11s injected=%s exit=%s rows=%s ok=%s failed=%s dups=%d losses=%d orphans=%d recover=%s",
            round_no,
            kind,
            kind_injected,
            code,
            audit and audit.rows,
            audit and audit.ok,
            audit and audit.failed,
            dups,
            losses,
            st.orphans,
            f"{recovered_at - fault_at:.1f}s" if recovered_at else "NO",
        )
        if audit is not None and not audit.clean:
            log.warning(
                "unclean audit: orphaned=%d missing=%d dup=%d failed_without_reason=%d",
                len(audit.orphaned_objects),
                len(audit.missing_objects),
                len(audit.duplicate_sources),
                len(audit.failed_without_reason),
            )
    stats["_meta"] = KindStats(images=expected_good)
    log.info("logs in %s", logs)
    return stats


def table(stats: dict[str, KindStats]) -> str:
    """The summary table (plain text)."""
    header = (
        f"{'fault kind':<12} {'faults':>6} {'images':>6} {'dups':>5} {'losses':>6} {'orphans':>7} "
        f"{'unrecov':>7} {'missed':>6} {'max RSS MiB':>11} {'recover s med/max':>18} {'fault exits':<20}"
    )
    lines = [header, "-" * len(header)]
    total = KindStats()
    for kind in KINDS:
        st = stats.get(kind)
        if st is None:
            continue
        rec = f"{statistics.median(st.recover_s):.1f}/{max(st.recover_s):.1f}" if st.recover_s else "-"
        lines.append(
            f"{kind:<12} {st.faults:>6} {st.images:>6} {st.duplicates:>5} {st.losses:>6} {st.orphans:>7} "
            f"{st.unrecovered:>7} {st.missed:>6} {st.max_rss / 2**20:>11.0f} {rec:>18} "
            f"{','.join(map(str, st.fault_exit)):<20}"
        )
        total.faults += st.faults
        total.images += st.images
        total.duplicates = max(total.duplicates, st.duplicates)
        total.losses = max(total.losses, st.losses)
        total.orphans += st.orphans
        total.unrecovered += st.unrecovered
        total.missed += st.missed
        total.max_rss = max(total.max_rss, st.max_rss)
        total.recover_s += st.recover_s
    rec = f"{statistics.median(total.recover_s):.1f}/{max(total.recover_s):.1f}" if total.recover_s else "-"
    lines.append("-" * len(header))
    lines.append(
        f"{'TOTAL':<12} {total.faults:>6} {total.images:>6} {total.duplicates:>5} {total.losses:>6} "
        f"{total.orphans:>7} {total.unrecovered:>7} {total.missed:>6} {total.max_rss / 2**20:>11.0f} {rec:>18}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="how long to inject faults")
    parser.add_argument("--images", type=int, default=12, help="new good images per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="state, logs (default: a new temp dir)")
    parser.add_argument("--workers", type=int, default=1, help="Dask workers per build")
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {sorted(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    atexit.register(PROCS.cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # Started as a background job (`soak.py &` in a script: the shell ignores SIGINT for it,
        # and every build would inherit that and shrug off its "sigint" fault, as 8 of 8 did
        # once). Builds must start as a terminal's foreground job does, with SIGINT live.
        log.info("SIGINT was ignored (a background job): restoring it, for this process and the builds")
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stats = soak(args)
    except KeyboardInterrupt:
        log.warning("interrupted: stopping everything")
        return 130
    finally:
        PROCS.cleanup()
    sys.stdout.write(table(stats) + "\n")
    sys.stdout.write(
        f"expected good images {stats['_meta'].images}; losses = expected good - ok rows after "
        "recovery (worst seen); dups = duplicate source rows (worst seen)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
