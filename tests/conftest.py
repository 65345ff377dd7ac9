"""Shared fixtures: the session's local S3 server (tests/plugins/s3.py)."""

pytest_plugins = ["tests.plugins.s3"]
