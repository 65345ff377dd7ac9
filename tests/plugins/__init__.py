"""Reusable pytest plugins (register with pytest_plugins or -p)."""
