"""Prefect flows: each composes `tasks/` over `som/` in the order data moves."""
