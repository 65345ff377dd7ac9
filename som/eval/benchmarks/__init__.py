"""Benchmark scorers, one module per benchmark, plus the file readers they share.

Every scorer must give the official script's number on the same answers, so the modules follow
the official parsing rules to the letter and say in their docstrings where they deliberately
differ (always in how malformed input is reported, never in how a valid file is scored).

The benchmarks' shared readers, `from som.eval.benchmarks import FormatError, iter_jsonl, ...`,
are defined in `som.eval.formats` (below both the items and the scorers, so neither imports the
other for them) and re-exported here for the benchmark modules. This package imports nothing
else: a scorer module may import it without an import cycle.
"""

from som.eval.formats import FormatError, iter_jsonl, read_json, require, text_field

__all__ = ["FormatError", "iter_jsonl", "read_json", "require", "text_field"]
