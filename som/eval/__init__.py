"""Evaluation: benchmark loaders and scorers that reproduce the official scripts' numbers.

`som.eval.benchmarks` holds one module per benchmark; `som.eval.cli` is the `som eval` command.
Importing this package pulls in nothing heavier than the standard library.
"""
