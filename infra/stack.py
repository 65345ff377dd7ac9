#!/usr/bin/env python3
"""Bring the whole local somflow stack up or down with one command.

One state folder holds everything a developer or single-machine user needs:

    STATE/stack.env       ``export`` lines for the CLI and flows (mode 600: S3 keys)
    STATE/stack.json      ports and settings of the last ``up``
    STATE/s3/             SeaweedFS S3 (infra/storage/seaweed.py), buckets created
    STATE/slurm/          local Slurm cluster with accounting (infra/slurm/cluster.py)
    STATE/prefect/home/   PREFECT_HOME of the server (its SQLite database) and worker
    STATE/prefect/*.log   server and worker output; *.pid their state (infra/service.py)

Usage (with the project's Python, so the ``prefect`` and ``weed`` beside it are used):

    .venv/bin/python infra/stack.py up                  # state in .state/stack
    source .state/stack/stack.env                       # PREFECT_API_URL, AWS_*, SLURM_CONF
    prefect --no-prompt deploy --all                    # deployments of prefect.yaml
    .venv/bin/python infra/stack.py status              # exit 0 all up, 3 otherwise
    .venv/bin/python infra/stack.py down

``up`` is idempotent: running parts are kept (and health-checked), missing ones started.
Everything listens on 127.0.0.1 unless ``--host`` says otherwise (the Prefect server only;
S3 and Slurm stay local). Every process the stack starts carries ``SOMFLOW_STACK=<state>``
in its environment, flow runs and their Dask workers included, so ``down`` finds and stops
all of them, and nothing else. The server and the worker are infra.service.Services, as
the S3 server and the Slurm daemons are in their scripts. Python standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.procs import ProcessError, alive, ancestors, locked, port_free, terminate, write_atomic
from infra.service import Service, ServiceError, start_watchdog, stop_watchdog

log = logging.getLogger("stack")

REPO_ROOT = Path(__file__).resolve().parents[1]
SEAWEED = REPO_ROOT / "infra" / "storage" / "seaweed.py"
SLURM = REPO_ROOT / "infra" / "slurm" / "cluster.py"
MARKER = "SOMFLOW_STACK"  # environment variable naming the state folder a process belongs to
DEFAULT_STATE = Path(".state/stack")
DEFAULT_POOL = "somflow"
DEFAULT_PREFECT_PORT = 4200
WORKER_NAME = "somflow-local"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STOPPED = 3  # `status` when a part is not running (LSB convention)


class StackError(ServiceError):
    """A failure the user can act on; the message says what to do next."""


# ----------------------------------------------------------------------------- state


@dataclass
class Layout:
    """Every path of one state folder."""

    root: Path

    s3 = property(lambda self: self.root / "s3")
    slurm = property(lambda self: self.root / "slurm")
    prefect = property(lambda self: self.root / "prefect")
    prefect_home = property(lambda self: self.root / "prefect" / "home")
    env = property(lambda self: self.root / "stack.env")
    state = property(lambda self: self.root / "stack.json")
    watchdog_pid = property(lambda self: self.root / "watchdog.pid")

    def prefect_service(
        self, name: str, command: list[str] | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Service:
        """The Prefect `server` or `worker` (`command` and the rest are needed only to start it)."""
        return Service(
            f"the Prefect {name}",
            command or [],
            log=self.prefect / f"{name}.log",
            state=self.prefect / f"{name}.pid",
            env=env,
            cwd=cwd,
        )


@dataclass
class State:
    """What `up` started, persisted so that `status`/`down` and the next `up` find it."""

    host: str = "127.0.0.1"
    prefect_port: int | None = None
    pool: str = DEFAULT_POOL
    slurm: bool = True
    buckets: list[str] = field(default_factory=lambda: ["somflow"])

    @property
    def api_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.prefect_port}/api"


def _client_host(host: str) -> str:
    """The address clients use: the bind address, or this machine's name for a wildcard."""
    return socket.getfqdn() if host in ("0.0.0.0", "::", "") else host


def load_state(layout: Layout) -> State:
    try:
        raw = json.loads(layout.state.read_text())
    except (FileNotFoundError, ValueError):
        return State()
    known = {k: v for k, v in raw.items() if k in State.__dataclass_fields__}
    return State(**known)


def save_state(layout: Layout, state: State) -> None:
    write_atomic(layout.state, json.dumps(asdict(state), indent=2) + "\n", 0o600)


# ----------------------------------------------------------------------------- environment


def _read_exports(path: Path) -> dict[str, str]:
    """`export NAME=value` lines of an env file written by the infra scripts."""
    values: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                name, _, value = line.removeprefix("export ").partition("=")
                values[name] = value.strip('"')
    return values


def stack_variables(layout: Layout, state: State) -> dict[str, str]:
    """The variables the CLI, the worker and flow runs need (no PATH: see write_env_file)."""
    variables = {name: value for name, value in _read_exports(layout.s3 / "s3.env").items() if name.startswith("AWS_")}
    variables["SOMFLOW_STORAGE_CONFIG"] = str(layout.s3 / "s3.env")
    if state.slurm:
        variables["SLURM_CONF"] = str(layout.slurm / "slurm.conf")
    if state.prefect_port:
        variables["PREFECT_API_URL"] = state.api_url
    variables["SOMFLOW_ROOT"] = str(REPO_ROOT)  # prefect.yaml's set_working_directory pull step
    return variables


def write_env_file(layout: Layout, state: State) -> None:
    lines = [f"# somflow local stack ({layout.root}) started by infra/stack.py; `source` this file."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in stack_variables(layout, state).items()]
    if state.slurm:
        lines.append('export PATH="$PATH:/usr/sbin"  # slurmctld and friends live there on Debian')
    write_atomic(layout.env, "\n".join(lines) + "\n", 0o600)


def process_env(layout: Layout, state: State, **extra: str) -> dict[str, str]:
    """Environment of a process the stack starts: ours + the stack's variables + the marker."""
    env = {**os.environ, **stack_variables(layout, state), **extra, MARKER: str(layout.root)}
    if state.slurm:
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    return env


# ----------------------------------------------------------------------------- helpers


def _run_script(script: Path, args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run an infra script with --json; its last stdout line is the report."""
    cmd = [sys.executable, str(script), *args, "--json"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from exc
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if result.returncode not in (0, EXIT_STOPPED) or "error" in report:
        raise StackError(
            f"`{script.relative_to(REPO_ROOT)} {args[0]}` failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    report["returncode"] = result.returncode
    return report


def prefect_binary() -> str:
    beside = Path(sys.executable).with_name("prefect")
    found = str(beside) if beside.exists() else shutil.which("prefect")
    if not found:
        raise StackError(
            "the `prefect` command was not found; run this script with the project's "
            "Python (.venv/bin/python infra/stack.py ...) after scripts/setup.sh"
        )
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0"))
    return {name: value for name, sep, value in pairs if sep}


def member_processes(layout: Layout, flow_runs_only: bool = False) -> list[int]:
    """Live processes carrying this stack's marker (never this process or its ancestors)."""
    protected = ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in protected:
            continue
        env = _environ(int(entry.name))
        if env.get(MARKER) != str(layout.root) or (flow_runs_only and "PREFECT__FLOW_RUN_ID" not in env):
            continue
        if alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _api(url: str, method: str = "GET", body: dict | None = None, timeout: float = 5) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our own server
        return json.loads(response.read() or b"null")


# ----------------------------------------------------------------------------- prefect


def server_healthy(state: State) -> bool:
    try:
        return _api(f"{state.api_url}/health", timeout=2) is True
    except (OSError, ValueError):
        return False


def pick_prefect_port(state: State, requested: int | None) -> int:
    """The requested port, else the previous one, else 4200, else any free one."""
    if requested:
        if not port_free(state.host, requested):
            raise StackError(f"port {requested} on {state.host} is in use; pick another --prefect-port")
        return requested
    for candidate in (state.prefect_port, DEFAULT_PREFECT_PORT):
        if candidate and port_free(state.host, candidate):
            return candidate
    with socket.socket() as sock:
        sock.bind((state.host, 0))
        return int(sock.getsockname()[1])


def start_server(layout: Layout, state: State, requested_port: int | None, timeout: float) -> str:
    if layout.prefect_service("server").pid() is not None and server_healthy(state):
        if requested_port and requested_port != state.prefect_port:
            raise StackError(f"the Prefect server already runs on port {state.prefect_port}; run `down` first")
        return "already-running"
    state.prefect_port = pick_prefect_port(state, requested_port)
    layout.prefect_home.mkdir(parents=True, exist_ok=True)
    env = process_env(
        layout,
        state,
        PREFECT_HOME=str(layout.prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=state.api_url,
    )
    cmd = [prefect_binary(), "server", "start", "--host", state.host, "--port", str(state.prefect_port)]
    server = layout.prefect_service("server", cmd, env, cwd=layout.prefect)
    server.start()
    server.wait_ready(lambda: server_healthy(state), timeout)
    return "started"


def ensure_work_pool(layout: Layout, state: State) -> str:
    """Create the `process` work pool unless it exists (its settings are then left alone)."""
    try:
        _api(f"{state.api_url}/work_pools/{state.pool}")
        return "exists"
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise StackError(f"reading work pool {state.pool!r} failed: HTTP {exc.code}") from exc
    cmd = [prefect_binary(), "work-pool", "create", state.pool, "--type", "process"]
    result = subprocess.run(
        cmd, capture_output=True, text=True, env=process_env(layout, state), timeout=120, check=False
    )
    if result.returncode != 0:
        raise StackError(f"`{' '.join(cmd)}` failed:\n{result.stdout}{result.stderr}")
    return "created"


def worker_online(state: State) -> bool:
    workers = _api(f"{state.api_url}/work_pools/{state.pool}/workers/filter", "POST", {})
    return any(w.get("name") == WORKER_NAME and w.get("status") == "ONLINE" for w in workers)


def start_worker(layout: Layout, state: State, poll_seconds: float, timeout: float) -> str:
    if layout.prefect_service("worker").pid() is not None:
        return "already-running"
    env = process_env(
        layout,
        state,
        PREFECT_HOME=str(layout.prefect_home),
        PREFECT_WORKER_QUERY_SECONDS=str(poll_seconds),
        PYTHONUNBUFFERED="1",
    )
    cmd = [prefect_binary(), "worker", "start", "--pool", state.pool, "--type", "process", "--name", WORKER_NAME]
    worker = layout.prefect_service("worker", cmd, env, cwd=REPO_ROOT)
    worker.start()
    worker.wait_ready(lambda: worker_online(state), timeout)
    return "started"


def stop_worker(layout: Layout) -> str:
    """A Prefect worker stops on the second SIGINT (INFRA-NOTES); SIGTERM/SIGKILL if it will not."""
    return layout.prefect_service("worker").stop(10, interrupts=2)


# ----------------------------------------------------------------------------- commands


def cmd_up(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    started = time.monotonic()
    state = load_state(layout)
    state.host, state.pool, state.slurm = args.host, args.pool, not args.no_slurm
    state.buckets = sorted(set(state.buckets) | set(args.bucket or []))
    if args.prefect_port and layout.prefect_service("server").pid() is None:
        pick_prefect_port(state, args.prefect_port)  # a busy port fails now, before anything starts
    layout.prefect.mkdir(parents=True, exist_ok=True)
    env = process_env(layout, state)
    report: dict[str, Any] = {"state_dir": str(layout.root)}
    try:
        bucket_args = [arg for bucket in state.buckets for arg in ("--bucket", bucket)]
        s3 = _run_script(SEAWEED, ["up", "--state", str(layout.s3), *bucket_args], env, args.timeout)
        report["s3"] = {"endpoint_url": s3["endpoint_url"], "buckets": s3["buckets"], "status": s3["status"]}
        if state.slurm:
            slurm = _run_script(
                SLURM,
                [
                    "up",
                    "--state",
                    str(layout.slurm),
                    "--nodes",
                    str(args.nodes),
                    "--cpus-per-node",
                    str(args.cpus_per_node),
                ],
                env,
                args.timeout,
            )
            report["slurm"] = {
                "nodes": slurm["nodes"],
                "slurm_conf": slurm["slurm_conf"],
                "status": "already-running" if slurm.get("already_running") else "started",
            }
        report["prefect_server"] = start_server(layout, state, args.prefect_port, args.timeout)
        if report["prefect_server"] == "started":
            stop_worker(layout)  # one still running talks to the previous server's address
        report["work_pool"] = ensure_work_pool(layout, state)
        write_env_file(layout, state)
        report["prefect_worker"] = start_worker(layout, state, args.worker_poll_seconds, args.timeout)
    finally:
        save_state(layout, state)
    if args.stop_with_pid:
        start_watchdog(
            args.stop_with_pid,
            layout.watchdog_pid,
            down=[sys.executable, str(Path(__file__).resolve()), "down", "--state", str(layout.root)],
        )
    report.update(
        api_url=state.api_url,
        ui_url=state.api_url.removesuffix("/api"),
        pool=state.pool,
        env_file=str(layout.env),
        logs=str(layout.prefect),
        seconds=round(time.monotonic() - started, 1),
    )
    return report


def cmd_down(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    """Stop in dependency order; a part that fails to stop does not keep the others running."""
    stop_watchdog(layout.watchdog_pid)
    state = load_state(layout)
    env = process_env(layout, state)
    stopped: dict[str, str] = {}
    errors: list[str] = []

    def attempt(name: str, action) -> None:
        try:
            stopped[name] = action()
        except (ServiceError, ProcessError) as exc:
            errors.append(f"{name}: {exc}")

    if layout.prefect_service("worker").pid() is not None:
        attempt("prefect-worker", lambda: stop_worker(layout))
    for pid in member_processes(layout, flow_runs_only=True):  # flow runs and their Dask workers
        attempt(f"flow-run process {pid}", lambda pid=pid: terminate(pid, timeout=10))
    server = layout.prefect_service("server")
    if server.pid() is not None:
        attempt("prefect-server", lambda: server.stop(20))
    if (layout.slurm / "state.json").exists():
        attempt(
            "slurm", lambda: ", ".join(_run_script(SLURM, ["down", "--state", str(layout.slurm)], env, 120)["stopped"])
        )
    if (layout.s3 / "state.json").exists():
        attempt("s3", lambda: _run_script(SEAWEED, ["down", "--state", str(layout.s3)], env, 60)["status"])
    for pid in member_processes(layout):  # anything else started under this stack
        attempt(f"process {pid}", lambda pid=pid: terminate(pid, timeout=10))
    return {"state_dir": str(layout.root), "stopped": stopped, "errors": errors, "remaining": member_processes(layout)}


def cmd_status(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    state = load_state(layout)
    env = process_env(layout, state)
    parts: dict[str, str] = {}
    s3 = _run_script(SEAWEED, ["status", "--state", str(layout.s3)], env, 30)
    parts["s3"] = s3["status"]
    if state.slurm:
        parts["slurm"] = (
            "running" if _run_script(SLURM, ["status", "--state", str(layout.slurm)], env, 30)["running"] else "stopped"
        )
    server_up = layout.prefect_service("server").pid() is not None and server_healthy(state)
    parts["prefect-server"] = "running" if server_up else "stopped"
    worker_up = server_up and layout.prefect_service("worker").pid() is not None
    with contextlib.suppress(OSError, ValueError):
        worker_up = worker_up and worker_online(state)
    parts["prefect-worker"] = "running" if worker_up else "stopped"
    return {
        "state_dir": str(layout.root),
        "running": all(v == "running" for v in parts.values()),
        "parts": parts,
        "api_url": state.api_url if state.prefect_port else None,
        "env_file": str(layout.env),
    }


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status,env}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"state folder (default {DEFAULT_STATE})")
        p.add_argument("--json", action="store_true", help="print the report as one JSON line")

    up = sub.add_parser("up", help="start (or health-check) S3, Slurm, the Prefect server, pool and worker")
    common(up)
    up.add_argument("--host", default="127.0.0.1", help="Prefect server bind address (default 127.0.0.1)")
    up.add_argument("--prefect-port", type=int, help="Prefect server port (default: previous, else 4200, else free)")
    up.add_argument("--pool", default=DEFAULT_POOL, help=f"process work pool name (default {DEFAULT_POOL})")
    up.add_argument("--bucket", action="append", metavar="NAME", help="extra S3 bucket (somflow always)")
    up.add_argument("--nodes", type=int, default=2, help="Slurm nodes (default 2)")
    up.add_argument("--cpus-per-node", type=int, default=2, help="CPUs each Slurm node announces (default 2)")
    up.add_argument("--no-slurm", action="store_true", help="leave Slurm out (no Debian packages, no root)")
    up.add_argument("--worker-poll-seconds", type=float, default=5.0, help="how often the worker asks for runs")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each part")
    up.add_argument("--stop-with-pid", type=int, metavar="PID", help="take the stack down once process PID exits")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop worker, flow runs, server, Slurm and S3 (data is kept)")
    common(down)
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="report every part (exit 3 unless all run)")
    common(status)
    status.set_defaults(func=cmd_status)

    env = sub.add_parser("env", help='print the export lines (eval "$(stack.py env)")')
    common(env)
    return parser


def emit(command: str, report: dict[str, Any]) -> None:
    if command == "up":
        print(
            f"somflow stack up in {report['seconds']} s: Prefect UI {report['ui_url']} "
            f"(pool {report['pool']}), S3 {report['s3']['endpoint_url']}"
            + (f", Slurm nodes {', '.join(report['slurm']['nodes'])}" if "slurm" in report else "")
        )
        print(f"  source {report['env_file']}    # logs: {report['logs']}")
    elif command == "down":
        print(f"stopped: {', '.join(report['stopped']) or 'nothing was running'}")
        for error in report["errors"]:
            print(f"error: {error}", file=sys.stderr)
        if report["remaining"]:
            print(f"still running: {report['remaining']}", file=sys.stderr)
    else:
        print(" ".join(f"{name}: {value}" for name, value in report["parts"].items()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="stack: %(message)s")
    layout = Layout(args.state.resolve())
    if args.command == "env":
        if not layout.env.exists():
            print(f"error: {layout.env} does not exist; run `infra/stack.py up` first", file=sys.stderr)
            return EXIT_ERROR
        print(layout.env.read_text(), end="")
        return EXIT_OK
    try:
        if args.command == "status":
            report = args.func(args, layout)
        else:
            with locked(layout.root):
                report = args.func(args, layout)
    except (ServiceError, ProcessError) as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            print(
                f"the parts that did start keep running: `{Path(__file__).name} down --state {layout.root}` stops them",
                file=sys.stderr,
            )
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report))
    else:
        emit(args.command, report)
    if args.command == "down" and (report["remaining"] or report["errors"]):
        return EXIT_ERROR
    if args.command == "status" and not report["running"]:
        return EXIT_STOPPED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
