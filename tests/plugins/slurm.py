"""pytest plugin: a real local Slurm cluster (with accounting) for the whole test session.

Register it with ``pytest_plugins = ["tests.plugins.slurm"]`` in a conftest (or
``-p tests.plugins.slurm`` on the command line). Fixtures:

- ``slurm_cluster`` (session): a cluster started through ``infra/slurm/cluster.py`` exactly
  as users start theirs (2 nodes x 2 CPUs), stopped with ``down`` at the end of the session.
  ``.env`` holds ``SLURM_CONF`` (and a PATH with /usr/sbin) for clients and submitit;
  ``.state_dir`` is the cluster's state folder.
- ``slurm_env``: the same cluster with its environment set in the test's process.

The tests using it are skipped, with the install command in the reason, only when the
Debian packages are not installed (``infra/slurm/install.sh``); any other failure to start
fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO_ROOT / "infra" / "slurm" / "cluster.py"
INSTALL_HINT = (
    "the Slurm/munge/MariaDB Debian packages are not installed; run "
    "infra/slurm/install.sh (apt-get install slurmctld slurmd slurm-client "
    "slurmdbd munge mariadb-server)"
)
# The daemons' programs; a missing one means the packages are not installed.
REQUIRED_PROGRAMS = (
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sacct",
    "sacctmgr",
)


class SlurmScriptError(RuntimeError):
    """The infra script failed; the message carries its output."""


def _search_path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def slurm_packages_installed() -> bool:
    return all(shutil.which(p, path=_search_path()) for p in REQUIRED_PROGRAMS)


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class SlurmCluster:
    """A local Slurm cluster started by the infra script."""

    state_dir: Path
    nodes: list[str] = field(default_factory=list)
    cpus_per_node: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def slurm_conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Variables a Slurm client (sbatch, sacct, submitit) needs (as in slurm.env)."""
        return {"SLURM_CONF": str(self.slurm_conf), "PATH": _search_path()}

    @property
    def env_file(self) -> Path:
        return self.state_dir / "slurm.env"

    def start(self, nodes: int = 2, cpus_per_node: int = 2, owner: int | None = None) -> dict[str, Any]:
        """`up`; the cluster goes down by itself once process `owner` (default: this test
        session) exits, so a killed session leaves no daemon behind."""
        result = run_script(
            "up",
            "--state",
            str(self.state_dir),
            "--nodes",
            str(nodes),
            "--cpus-per-node",
            str(cpus_per_node),
            "--json",
            "--stop-with-pid",
            str(owner or os.getpid()),
        )
        if result.returncode != 0:
            raise SlurmScriptError(f"cluster.py up failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        self.report = json.loads(result.stdout.strip().splitlines()[-1])
        self.nodes = list(self.report["nodes"])
        self.cpus_per_node = int(self.report["cpus_per_node"])
        return self.report

    def stop(self) -> dict[str, Any]:
        result = run_script("down", "--state", str(self.state_dir), "--json")
        if result.returncode != 0:
            raise SlurmScriptError(f"cluster.py down failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def status(self) -> subprocess.CompletedProcess[str]:
        return run_script("status", "--state", str(self.state_dir), "--json")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A 2-node local Slurm cluster for the session; `down` when the session ends."""
    if not slurm_packages_installed():
        pytest.skip(INSTALL_HINT)
    cluster = SlurmCluster(state_dir=tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (SlurmScriptError, subprocess.TimeoutExpired) as exc:
        run_script("down", "--state", str(cluster.state_dir))
        pytest.fail(f"could not start the local Slurm cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm_env(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster, with its environment set in this process for the test: submitit calls
    sbatch/sacct/scancel with it, and jobs inherit it."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    return slurm_cluster
