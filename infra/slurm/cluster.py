#!/usr/bin/env python3
"""Start, stop and inspect a real local Slurm cluster (with accounting) for somflow.

One machine plays every role: munged, MariaDB + slurmdbd (submitit reads job states with
``sacct``), slurmctld and N slurmd "nodes" (Debian's slurm-wlm is built with
MULTIPLE_SLURMD). Everything is bound to 127.0.0.1 and lives in one state folder, so
several clusters (a developer's, a test session's) can run side by side:

    STATE/slurm.conf      generated cluster config (clients: ``export SLURM_CONF=...``)
    STATE/slurmdbd.conf   accounting daemon config (mode 600; slurmdbd reads it beside
                          $SLURM_CONF, it has no -f option)
    STATE/slurm.env       ``export SLURM_CONF=...`` to ``source``
    STATE/state.json      ports and node names of the last start
    STATE/run/NAME.pid    state of each daemon's process (pid and start time; infra/service.py)
    STATE/hosts           /etc/hosts + node names, bind-mounted over /etc/hosts for slurmd
    STATE/munge/          munge key, socket (folder mode 755), log, seed
    STATE/mysql/          MariaDB data folder, socket, log
    STATE/spool/ ...      slurmctld state, slurmd spools, logs, pid files

Usage:
    python infra/slurm/cluster.py up --state .state/slurm [--nodes 2] [--cpus-per-node 2]
    source .state/slurm/slurm.env && sinfo
    python infra/slurm/cluster.py status --state .state/slurm    # exit 0 up, 3 down
    python infra/slurm/cluster.py down --state .state/slurm

Needs the Debian packages (``infra/slurm/install.sh``) and root (slurmd runs jobs as
their submitter and starts under a private mount namespace). Each daemon is an
infra.service.Service. Python standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from infra.procs import ProcessError, alive, ancestors, port_free, terminate, write_atomic
from infra.service import Service, ServiceError, start_watchdog, stop_watchdog

log = logging.getLogger("slurm-cluster")

HOST = "127.0.0.1"
CLUSTER_NAME = "somflow"
PORT_RANGE = (12000, 30000)  # below the ephemeral range (32768+)
SOCKET_PATH_MAX = 100  # unix socket paths are limited to ~107 bytes
APT_COMMAND = (
    "apt-get update && apt-get install -y --no-install-recommends "
    "slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
)
REQUIRED_BINARIES = (
    "munged",
    "mungekey",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sinfo",
    "sacctmgr",
    "scontrol",
    "squeue",
    "scancel",
    "unshare",
    "mount",
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STOPPED = 3  # `status` on a cluster that is not running (LSB convention)

# Start order; `down` stops in reverse.
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld")


class ClusterError(ServiceError):
    """A failure the user can act on; the message says what to do next."""


# ----------------------------------------------------------------------------- layout


class Layout:
    """Every path of one state folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    conf = property(lambda self: self.root / "slurm.conf")
    dbd_conf = property(lambda self: self.root / "slurmdbd.conf")
    env = property(lambda self: self.root / "slurm.env")
    state = property(lambda self: self.root / "state.json")
    hosts = property(lambda self: self.root / "hosts")
    munge = property(lambda self: self.root / "munge")
    munge_key = property(lambda self: self.root / "munge" / "munge.key")
    mysql = property(lambda self: self.root / "mysql")
    mysql_data = property(lambda self: self.root / "mysql" / "data")
    spool = property(lambda self: self.root / "spool")
    logs = property(lambda self: self.root / "log")
    run = property(lambda self: self.root / "run")
    watchdog_pid = property(lambda self: self.root / "watchdog.pid")

    @property
    def munge_socket_dir(self) -> Path:
        """munged wants its socket folder mode 755 and every parent searchable by all; a
        pytest tmp folder (/tmp/pytest-of-root is 700) is not, and long paths overflow the
        unix socket limit, so fall back to a short folder in /tmp named after the state."""
        local = self.munge / "sock"
        if len(str(local / "munge.socket")) <= SOCKET_PATH_MAX and _searchable_by_all(local):
            return local
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path("/tmp") / f"somflow-munge-{digest}"

    @property
    def munge_socket(self) -> Path:
        return self.munge_socket_dir / "munge.socket"

    @property
    def mysql_socket(self) -> Path:
        local = self.mysql / "mysqld.sock"
        if len(str(local)) <= SOCKET_PATH_MAX:
            return local
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path("/tmp") / f"somflow-mysql-{digest}.sock"

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pid_of(self, name: str) -> Path:
        return self.run / f"{name}.pid"


def _searchable_by_all(path: Path) -> bool:
    for parent in [*reversed(path.parents)]:
        with contextlib.suppress(FileNotFoundError):
            if not parent.stat().st_mode & 0o001:
                return False
    return True


def load_state(layout: Layout) -> dict[str, Any]:
    try:
        return json.loads(layout.state.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def save_state(layout: Layout, state: dict[str, Any]) -> None:
    write_atomic(layout.state, json.dumps(state, indent=2) + "\n", 0o600)


# ----------------------------------------------------------------------------- checks


def check_prerequisites() -> None:
    missing = [b for b in REQUIRED_BINARIES if not _which(b)]
    if missing:
        raise ClusterError(
            f"missing Slurm/munge/MariaDB programs: {', '.join(missing)}. Install the Debian "
            f"packages (as root): {APT_COMMAND}   (or run infra/slurm/install.sh)"
        )
    if os.geteuid() != 0:
        raise ClusterError(
            "the local Slurm cluster must be started as root (slurmd, unshare --mount and SlurmUser=root need it)"
        )


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


# ----------------------------------------------------------------------------- ports


def plan_ports(previous: dict[str, int], names: list[str]) -> dict[str, int]:
    """A free port per name: the previous one if still free, else a random free one."""
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for name in names:
        old = previous.get(name)
        if old and old not in taken and port_free(HOST, old):
            port = old
        else:
            for _ in range(1000):
                port = random.randint(*PORT_RANGE)
                if port not in taken and port_free(HOST, port):
                    break
            else:
                raise ClusterError(f"no free port found in {PORT_RANGE}")
        ports[name] = port
        taken.add(port)
    return ports


# ----------------------------------------------------------------------------- configs


def _real_memory_mb(nodes: int) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return max(256, int(line.split()[1]) // 1024 // max(nodes, 1) * 8 // 10)
    except OSError:
        pass
    return 1024


def write_configs(layout: Layout, nodes: int, cpus: int, ports: dict[str, int], db_password: str) -> list[str]:
    host = socket.gethostname().split(".")[0]
    node_names = [f"node{k}" for k in range(1, nodes + 1)]
    mem = _real_memory_mb(nodes)
    r = layout.root
    conf = [
        "# Generated by infra/slurm/cluster.py; regenerated on every `up`.",
        f"ClusterName={CLUSTER_NAME}",
        f"SlurmctldHost={host}({HOST})",
        f"SlurmctldPort={ports['slurmctld']}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={layout.munge_socket}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        "JobRequeue=1",
        "MailProg=/bin/true",
        # bind slurmctld/slurmd to their 127.0.0.1 addresses, not every interface
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/slurmdbd",
        f"AccountingStorageHost={HOST}",
        f"AccountingStoragePort={ports['slurmdbd']}",
        f"AccountingStoragePass={layout.munge_socket}",
        f"StateSaveLocation={r / 'spool' / 'ctld'}",
        f"SlurmdSpoolDir={r / 'spool' / '%n'}",
        f"SlurmctldPidFile={layout.pid_of('slurmctld-daemon')}",
        f"SlurmdPidFile={r / 'run' / 'slurmd-%n-daemon.pid'}",
        f"SlurmctldLogFile={layout.log_of('slurmctld')}",
        f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=60",
        "InactiveLimit=0",
        "MinJobAge=300",
        "KillWait=5",
        "Waittime=0",
        "MessageTimeout=20",
    ]
    for name in node_names:
        conf.append(
            f"NodeName={name} NodeHostname={host} NodeAddr={HOST} "
            f"Port={ports[name]} CPUs={cpus} RealMemory={mem} State=UNKNOWN"
        )
    conf.append(
        f"PartitionName=debug Nodes={','.join(node_names)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
    )
    write_atomic(layout.conf, "\n".join(conf) + "\n")

    dbd = [
        "# Generated by infra/slurm/cluster.py.",
        "AuthType=auth/munge",
        f"AuthInfo=socket={layout.munge_socket}",
        f"DbdHost={host}",
        f"DbdAddr={HOST}",  # the address clients are told, not the one slurmdbd binds
        f"DbdPort={ports['slurmdbd']}",
        # slurmdbd binds INADDR_ANY (0.0.0.0) by default, whatever DbdAddr says (22.05's
        # slurmdbd.conf has no bind option). With NoInAddrAny (parsed here too) it binds the
        # address its hostname resolves to (Slurm's slurm_setup_addr), as slurmctld and slurmd
        # do under slurm.conf's NoCtldInAddrAny,NoInAddrAny: loopback where the hostname maps
        # to 127.0.0.1, as in /etc/hosts here; one interface, not all, otherwise.
        "CommunicationParameters=NoInAddrAny",
        "SlurmUser=root",
        "DebugLevel=info",
        f"LogFile={layout.log_of('slurmdbd')}",
        f"PidFile={layout.pid_of('slurmdbd-daemon')}",
        "StorageType=accounting_storage/mysql",
        f"StorageHost={HOST}",
        f"StoragePort={ports['mariadb']}",
        "StorageUser=slurm",
        f"StoragePass={db_password}",
        "StorageLoc=slurm_acct_db",
    ]
    write_atomic(layout.dbd_conf, "\n".join(dbd) + "\n", 0o600)

    hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    write_atomic(
        layout.hosts, hosts.rstrip("\n") + "\n# somflow local Slurm nodes\n" + f"{HOST} {' '.join(node_names)}\n"
    )

    env = [
        "# Local Slurm cluster started by infra/slurm/cluster.py; `source` this file.",
        f"export SLURM_CONF={layout.conf}",
        'export PATH="$PATH:/usr/sbin"',
    ]
    write_atomic(layout.env, "\n".join(env) + "\n")
    return node_names


def client_env(layout: Layout) -> dict[str, str]:
    env = dict(os.environ)
    env["SLURM_CONF"] = str(layout.conf)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    return env


# ----------------------------------------------------------------------------- processes


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.decode(errors="replace").partition("=")
        if sep:
            out[k] = v
    return out


def daemon(layout: Layout, name: str, command: list[str] | None = None, env: dict[str, str] | None = None) -> Service:
    """The Service of one daemon (munged, mariadbd, slurmdbd, slurmctld or a node's slurmd):
    its stdout in log/NAME.stdout.log, its own LogFile tailed beside it in errors."""
    own_log = layout.logs / f"slurmd-{name}.log" if name.startswith("node") else layout.log_of(name)
    return Service(
        name,
        command or [],
        log=layout.log_of(f"{name}.stdout"),
        state=layout.pid_of(name),
        env=env,
        cwd=layout.root,
        logs=[own_log],
    )


def running_pids(layout: Layout) -> dict[str, int]:
    """The daemons of this state folder that are alive: {name: pid}."""
    names = {path.stem for path in layout.run.glob("*.pid") if not path.stem.endswith("-daemon")}
    pids = {name: daemon(layout, name).pid() for name in sorted(names)}
    return {name: pid for name, pid in pids.items() if pid is not None}


def _run(
    cmd: list[str], env: dict[str, str], timeout: float = 30, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"`{' '.join(cmd)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


# ----------------------------------------------------------------------------- up


def _ensure_munge_key(layout: Layout, env: dict[str, str]) -> None:
    if layout.munge_key.exists():
        return
    _run(["mungekey", "--create", f"--keyfile={layout.munge_key}"], env)
    os.chmod(layout.munge_key, 0o600)


def _ensure_mariadb_data(layout: Layout, env: dict[str, str]) -> None:
    if (layout.mysql_data / "mysql").is_dir():
        return
    if layout.mysql_data.exists():
        shutil.rmtree(layout.mysql_data)  # a half-initialised folder from a failed start
    layout.mysql_data.mkdir(parents=True)
    _run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={layout.mysql_data}",
            "--user=root",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ],
        env,
        timeout=120,
    )


def up(layout: Layout, nodes: int, cpus: int) -> dict[str, Any]:
    check_prerequisites()
    layout.root.mkdir(parents=True, exist_ok=True)
    state = load_state(layout)
    alive = running_pids(layout)
    expected = {*DAEMONS, *state.get("nodes", [])}
    if (
        alive
        and set(alive) == expected
        and state.get("nodes")
        and len(state["nodes"]) == nodes
        and state.get("cpus_per_node") == cpus
        and _nodes_ready(layout, state["nodes"])
    ):
        report = _report(layout, state, alive)
        report["already_running"] = True
        return report
    if alive:
        log.info("restarting a partially running cluster (%s)", ", ".join(alive))
        down(layout)
        state = load_state(layout)

    started = time.monotonic()
    for d in (layout.munge, layout.mysql, layout.spool / "ctld", layout.logs, layout.run):
        d.mkdir(parents=True, exist_ok=True)
    node_names = [f"node{k}" for k in range(1, nodes + 1)]
    for name in node_names:
        (layout.spool / name).mkdir(parents=True, exist_ok=True)
    ports = plan_ports(state.get("ports", {}), ["slurmctld", "slurmdbd", "mariadb", *node_names])
    db_password = state.get("db_password") or secrets.token_hex(16)
    write_configs(layout, nodes, cpus, ports, db_password)
    state = {
        "nodes": node_names,
        "cpus_per_node": cpus,
        "ports": ports,
        "db_password": db_password,
        "cluster_name": CLUSTER_NAME,
    }
    save_state(layout, state)

    env = client_env(layout)
    env["SOMFLOW_SLURM_STATE"] = str(layout.root)

    def start(name: str, command: list[str]) -> Service:
        service = daemon(layout, name, command, env)
        service.start()
        return service

    try:
        # munge
        _ensure_munge_key(layout, env)
        sock_dir = layout.munge_socket_dir
        sock_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(sock_dir, 0o755)
        layout.munge_socket.unlink(missing_ok=True)
        munged = start(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={layout.munge_socket}",
                f"--key-file={layout.munge_key}",
                f"--pid-file={layout.pid_of('munged-daemon')}",
                f"--log-file={layout.log_of('munged')}",
                f"--seed-file={layout.munge / 'munged.seed'}",
            ],
        )
        munged.wait_ready(layout.munge_socket.is_socket, 15)

        # MariaDB
        _ensure_mariadb_data(layout, env)
        layout.mysql_socket.unlink(missing_ok=True)
        mariadbd = start(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={layout.mysql_data}",
                f"--socket={layout.mysql_socket}",
                f"--port={ports['mariadb']}",
                f"--bind-address={HOST}",
                f"--pid-file={layout.mysql / 'mariadbd.pid'}",
                f"--log-error={layout.log_of('mariadbd')}",
                "--user=root",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=48M",
            ],
        )
        mysql = ["mariadb", "--no-defaults", f"--socket={layout.mysql_socket}", "-uroot"]
        mariadbd.wait_ready(lambda: _run([*mysql, "-e", "SELECT 1"], env, check=False).returncode == 0, 60)
        sql = (
            f"CREATE USER IF NOT EXISTS 'slurm'@'{HOST}' IDENTIFIED BY '{db_password}'; "
            f"ALTER USER 'slurm'@'{HOST}' IDENTIFIED BY '{db_password}'; "
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{HOST}'; FLUSH PRIVILEGES;"
        )
        _run([*mysql, "-e", sql], env)

        # slurmdbd
        slurmdbd = start("slurmdbd", ["slurmdbd", "-D"])
        slurmdbd.wait_ready(lambda: _port_listening(ports["slurmdbd"]), 60)
        listed = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env, check=False)
        if CLUSTER_NAME not in listed.stdout.split():
            _run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME], env)

        # slurmctld
        slurmctld = start("slurmctld", ["slurmctld", "-D", "-f", str(layout.conf)])
        slurmctld.wait_ready(lambda: "UP" in _run(["scontrol", "ping"], env, check=False, timeout=10).stdout, 30)

        # slurmd nodes, each in a private mount namespace where node names resolve
        nodes_started = []
        for name in node_names:
            script = f"mount --bind {_sh(layout.hosts)} /etc/hosts && exec slurmd -D -N {name} -f {_sh(layout.conf)}"
            nodes_started.append(start(name, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]))
        nodes_started[0].wait_ready(lambda: _nodes_ready(layout, node_names), 60, what="the slurmd nodes")
    except BaseException:
        with contextlib.suppress(Exception):
            down(layout)
        raise
    report = _report(layout, state, running_pids(layout))
    report["already_running"] = False
    report["startup_s"] = round(time.monotonic() - started, 2)
    return report


def _sh(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _port_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def node_states(layout: Layout) -> dict[str, str]:
    result = _run(["sinfo", "-h", "-N", "-o", "%N %T"], client_env(layout), check=False, timeout=10)
    if result.returncode != 0:
        return {}
    states = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _nodes_ready(layout: Layout, names: list[str]) -> bool:
    states = node_states(layout)
    return all(states.get(n, "").rstrip("*") in ("idle", "mixed", "allocated") for n in names)


def _report(layout: Layout, state: dict[str, Any], alive: dict[str, int]) -> dict[str, Any]:
    return {
        "state_dir": str(layout.root),
        "slurm_conf": str(layout.conf),
        "env_file": str(layout.env),
        "cluster_name": state.get("cluster_name", CLUSTER_NAME),
        "nodes": state.get("nodes", []),
        "cpus_per_node": state.get("cpus_per_node"),
        "ports": state.get("ports", {}),
        "pids": alive,
        "env": {"SLURM_CONF": str(layout.conf)},
    }


# ----------------------------------------------------------------------------- down


def _job_processes(layout: Layout) -> list[int]:
    """slurmstepd and job processes this cluster started (found through their SLURM_CONF),
    never this process or its ancestors."""
    conf = str(layout.conf)
    protected = ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in protected:
            continue
        pid = int(entry.name)
        env = _environ(pid)
        if env.get("SOMFLOW_SLURM_STATE") == str(layout.root) or (
            env.get("SLURM_CONF") == conf and "SLURM_JOB_ID" in env
        ):
            if alive(pid):
                found.append(pid)
    return found


def down(layout: Layout) -> dict[str, Any]:
    state = load_state(layout)
    alive = running_pids(layout)
    stopped: dict[str, str] = {}
    env = client_env(layout)
    if "slurmctld" in alive:
        with contextlib.suppress(Exception):  # let running jobs end before their nodes go
            _run(["scancel", "--full", "--quiet", "--partition=debug"], env, check=False, timeout=10)
            _run(["scancel", "--quiet", "--state=PENDING"], env, check=False, timeout=10)
    order = [*state.get("nodes", []), "slurmctld", "slurmdbd", "mariadbd", "munged"]
    for name in order + [n for n in alive if n not in order]:
        if name in alive:
            stopped[name] = daemon(layout, name).stop(15)
    # Left-overs: slurmstepd and job steps (they leave slurmd's process group).
    for pid in _job_processes(layout):
        with contextlib.suppress(ProcessError):
            stopped[f"pid {pid}"] = terminate(pid, timeout=5)
    for sock in (layout.munge_socket, layout.mysql_socket):
        with contextlib.suppress(OSError):
            sock.unlink()
    with contextlib.suppress(OSError):
        if layout.munge_socket_dir.parent == Path("/tmp"):
            layout.munge_socket_dir.rmdir()
    return {
        "state_dir": str(layout.root),
        "stopped": stopped,
        "remaining": _job_processes(layout) + list(running_pids(layout).values()),
    }


# ----------------------------------------------------------------------------- status


def status(layout: Layout) -> tuple[int, dict[str, Any]]:
    state = load_state(layout)
    alive = running_pids(layout)
    nodes = state.get("nodes", [])
    expected = {*DAEMONS, *nodes}
    report = _report(layout, state, alive)
    report["node_states"] = node_states(layout) if "slurmctld" in alive else {}
    report["missing"] = sorted(expected - set(alive)) if state else sorted(DAEMONS)
    running = bool(nodes) and not report["missing"] and _nodes_ready(layout, nodes)
    report["running"] = running
    return (EXIT_OK if running else EXIT_STOPPED), report


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--state", type=Path, default=Path(".state/slurm"), help="state folder (default: .state/slurm)")
    parser.add_argument("--nodes", type=int, default=2, help="slurmd nodes (default 2)")
    parser.add_argument("--cpus-per-node", type=int, default=2, help="CPUs each node announces (default 2)")
    parser.add_argument(
        "--stop-with-pid",
        type=int,
        metavar="PID",
        help="up: take the cluster down when process PID exits (tests use it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.nodes < 1 or args.cpus_per_node < 1:
        parser.error("--nodes and --cpus-per-node must be >= 1")
    layout = Layout(args.state)
    code = EXIT_OK
    try:
        if args.command == "up":
            report = up(layout, args.nodes, args.cpus_per_node)
            if args.stop_with_pid:
                start_watchdog(
                    args.stop_with_pid,
                    layout.watchdog_pid,
                    target=layout.pid_of("slurmctld"),
                    down=[sys.executable, str(Path(__file__).resolve()), "down", "--state", str(layout.root)],
                )
        elif args.command == "down":
            stop_watchdog(layout.watchdog_pid)
            report = down(layout)
            if report["remaining"]:
                code = EXIT_ERROR
        else:
            code, report = status(layout)
    except (ServiceError, ProcessError) as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report))
    elif args.command == "up":
        verb = "already running" if report.get("already_running") else "started"
        print(
            f"Slurm cluster {verb}: {len(report['nodes'])} nodes "
            f"({', '.join(report['nodes'])}), slurmctld port {report['ports']['slurmctld']}"
            f"\n  source {report['env_file']}"
        )
    elif args.command == "down":
        print(f"stopped: {', '.join(report['stopped']) or 'nothing was running'}")
        if report["remaining"]:
            print(f"still running: {report['remaining']}", file=sys.stderr)
    else:
        print(
            f"{'running' if report['running'] else 'not running'}; nodes: "
            f"{report['node_states'] or '-'}; missing: {report['missing'] or '-'}"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
