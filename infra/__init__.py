"""What runs somflow: the local services and their one supervisor (service.py)."""

SOMFLOW_PACKAGE = True
"""Marks this top-level package as somflow's (see som.cli.LazyGroup: another installed
package of the same generic name would shadow it; the CLI says so instead of failing oddly)."""
