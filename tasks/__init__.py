"""Prefect tasks: thin wrappers over `som` functions adding retries, caching and reporting."""
