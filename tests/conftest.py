"""The test session's plugins (tests/plugins/): fixtures for real services (S3, Slurm, the whole
stack, a Prefect API, a chat server), shared test data and models, the `gpu` marker's skip, and
how tests are shared between pytest-xdist workers.
Helpers that tests import live in tests/helpers/; no test imports from a conftest."""

pytest_plugins = [
    "tests.plugins.gpu",
    "tests.plugins.s3",
    "tests.plugins.slurm",
    "tests.plugins.chat",
    "tests.plugins.prefect",
    "tests.plugins.stack",
    "tests.plugins.training",
    "tests.plugins.marks",
    "tests.plugins.workers",
]
