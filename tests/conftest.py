"""Shared fixtures: the session's local S3 server and Slurm cluster (tests/plugins/)."""

pytest_plugins = ["tests.plugins.s3", "tests.plugins.slurm"]
