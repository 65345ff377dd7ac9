"""Issue 11 item 10: what somflow starts listens on loopback unless asked otherwise."""

from __future__ import annotations

import ipaddress
import os

import psutil

LOOPBACK = {"127.0.0.1", "::1"}


def listening(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket of these processes."""
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            out.append((conn.pid, conn.laddr.ip, conn.laddr.port))
    return out


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def test_local_dask_cluster_of_the_dataset_flow_listens_on_loopback_only():
    """Scheduler, dashboard, nannies and workers of the flow's LocalCluster: 127.0.0.1 only.
    (The dashboard used ":0", which binds every interface.)"""
    from distributed import Client, LocalCluster

    from tasks.cluster import local_cluster_spec

    cluster_class, kwargs = local_cluster_spec(2, 0, {}, cpus=2)
    assert cluster_class == "distributed.LocalCluster"
    before = {
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid == os.getpid()
    }
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        me = psutil.Process()
        pids = [me.pid, *(child.pid for child in me.children(recursive=True))]
        sockets = [s for s in listening(pids) if not (s[0] == me.pid and s[2] in before)]
        worker_pids = {p.pid for p in me.children(recursive=True)}
        assert cluster.dashboard_link, "the dashboard did not start"
        assert any(pid in worker_pids for pid, _, _ in sockets), sockets  # workers were seen
        exposed = [s for s in sockets if not is_loopback(s[1])]
        assert not exposed, f"listening beyond loopback: {exposed}"


def test_local_slurm_cluster_daemons_listen_on_loopback_only(slurm_cluster):
    """munged (a socket file), MariaDB, slurmdbd, slurmctld and slurmd: no socket beyond
    loopback. slurmdbd bound 0.0.0.0 (DbdAddr is not a bind address)."""
    root_pids = [int(pid) for pid in slurm_cluster.report["pids"].values()]
    pids = set(root_pids)
    for pid in root_pids:
        try:
            pids.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    sockets = listening(sorted(pids))
    names = {psutil.Process(pid).name() for pid, _, _ in sockets}
    assert {"slurmdbd", "slurmctld", "mariadbd"} <= names, sockets
    exposed = [(psutil.Process(pid).name(), ip, port) for pid, ip, port in sockets if not is_loopback(ip)]
    assert not exposed, f"listening beyond loopback: {exposed}"


PROBE = r"""
import json, psutil
from som.train.distributed import init_distributed, teardown
env = init_distributed(timeout_min=1)
import torch.distributed as dist
dist.barrier()
sockets = [(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("tcp")
           if c.status == psutil.CONN_LISTEN]
teardown()
print(json.dumps({"backend": env.backend, "world": env.world_size, "sockets": sockets}))
"""


def test_single_process_training_rendezvous_listens_on_loopback_only():
    """The single-process path of the training entry: torch's TCPStore bound "::" (every
    interface) although MASTER_ADDR was 127.0.0.1."""
    import json
    import subprocess
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "RANK",
            "LOCAL_RANK",
            "WORLD_SIZE",
            "LOCAL_WORLD_SIZE",
            "MASTER_ADDR",
            "MASTER_PORT",
            "SLURM_JOB_ID",
            "SLURM_JOBID",
            "GLOO_SOCKET_IFNAME",
        )
    }
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["world"] == 1 and report["sockets"], report
    exposed = [s for s in report["sockets"] if not is_loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"
