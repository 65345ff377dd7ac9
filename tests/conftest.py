"""Shared fixtures (tests/plugins/): the session's local S3 server and Slurm cluster, and a local
OpenAI-compatible chat server."""

pytest_plugins = ["tests.plugins.s3", "tests.plugins.slurm", "tests.plugins.chat"]
