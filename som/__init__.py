"""somflow's domain library: Set-of-Mark marking, data, training and evaluation.

Nothing in `som` imports Prefect; `tasks/` and `flows/` orchestrate it.
"""

__version__ = "0.1.0"
