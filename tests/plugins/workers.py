"""pytest plugin: how the suite is shared between pytest-xdist workers (``-n 2 --dist loadgroup``,
set in pyproject's addopts; ``-n 0`` runs it in one process).

Why: about half of the suite's time is spent waiting (Slurm scheduling, servers starting, jobs
importing torch), so two workers on two cores finish in about three quarters of the time (12
min instead of 15.5 on a 2-core machine). A session service starts once per worker that uses
it, so the tests of each local Slurm cluster stay on one worker: those of the whole stack
(`infra/stack.py up` starts its own cluster) in one group, those of the Slurm fixture's cluster,
or of a cluster the test starts itself (a file named for Slurm), in another. Without that, each
worker would start its own clusters, slurmdbd and MariaDB included. The other session services
(SeaweedFS, Prefect's test server) are cheap and start per worker.
"""

from __future__ import annotations

import pytest

STACK_FIXTURES = frozenset({"stack", "deployed", "dataset_run"})
SLURM_FIXTURES = frozenset({"slurm_cluster", "slurm_env"})


def worker_group(fixtures: set[str], path: str) -> str | None:
    """The xdist group of a test that uses `fixtures` and lives in `path` (None: any worker)."""
    if STACK_FIXTURES & fixtures:
        return "stack"
    if SLURM_FIXTURES & fixtures or "slurm" in path:
        return "slurm"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = worker_group(set(getattr(item, "fixturenames", ())), item.nodeid.split("::")[0])
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
