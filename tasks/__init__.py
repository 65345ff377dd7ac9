"""Prefect tasks: thin wrappers over `som` functions adding retries, caching and reporting."""

SOMFLOW_PACKAGE = True
"""Marks this top-level package as somflow's (see som.cli.LazyGroup: another installed
package of the same generic name would shadow it; the CLI says so instead of failing oddly)."""
