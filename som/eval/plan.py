"""What an evaluation run will do, decided before anything is submitted (no Prefect here).

The som-evaluate flow (flows/evaluate.py) only composes stages; the choices behind them live
here so they are unit-tested on their own: which benchmarks a suite adds and where their files
are, whether the inputs are complete (names, sources, variants, a judge where one grades),
where each array's submitit files go, and where the scores document is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from som import jobs as som_jobs
from som import storage
from som.eval import runner
from som.eval.registry import get_benchmark
from som.eval.suites import get_suite


def jobs_folder(run_dir: str, benchmark: str, variant: str) -> str:
    """submitit's folder for one array (see `som.jobs.jobs_folder` for remote run folders)."""
    return str(som_jobs.jobs_folder(run_dir, "eval", "_jobs", f"{benchmark}-{variant}"))


def make_judge(spec: str | None) -> Any:
    """A Judge from ``[openai:]<model>[@<base_url>]`` (base URL else $SOMFLOW_CHAT_BASE_URL)."""
    if not spec:
        return None
    from som.eval.judge import Judge

    model, _, base_url = spec.removeprefix("openai:").partition("@")
    return Judge(base_url or None, model)


def _registry_name(name: str) -> str:
    try:
        return get_benchmark(name).name
    except ValueError:
        return name  # a source for a benchmark not asked for: unused


def suite_inputs(
    suite: str | None,
    benchmarks: list[str] | None,
    data: Mapping[str, str],
    data_root: str | None,
    variants: list[str] | None,
) -> tuple[list[str], dict[str, str], list[str]]:
    """(benchmarks, sources, variants) after a suite's defaults: a suite adds its benchmarks
    (sources under `data_root` unless `data` names one) and its variants when none are given."""
    given = {_registry_name(name): source for name, source in data.items()}
    if suite is None:
        if data_root:
            raise ValueError("data_root is only used with a suite (som eval run --suite llava15 --data-root DIR)")
        return list(benchmarks or []), given, list(variants if variants is not None else runner.VARIANTS)
    chosen = get_suite(suite)
    names = chosen.names + [name for name in (benchmarks or []) if get_benchmark(name).name not in chosen.names]
    sources = {**chosen.sources(data_root, given), **given}
    return names, sources, list(variants if variants is not None else chosen.variants)


def check_inputs(
    benchmarks: list[str], data: Mapping[str, str], variants: list[str], shards: int, judge: str | None
) -> dict[str, str]:
    """Fail before submitting anything: unknown names, missing sources, a judge not given.
    Returns the sources by registry name ("llava-bench" and "llava_bench" are one benchmark)."""
    if not benchmarks:
        raise ValueError("no benchmark given (name benchmarks, or a suite: som eval run --suite llava15)")
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if not variants:
        raise ValueError(f"no variant given; choose from {', '.join(runner.VARIANTS)}")
    for variant in variants:
        runner.check_variant(variant)
    names = [get_benchmark(name).name for name in benchmarks]
    given = {_registry_name(name): source for name, source in data.items()}
    missing = [name for name in names if name not in given]
    if missing:
        raise ValueError(
            f"no data source for {', '.join(missing)}: pass data={{name: folder or URL}} "
            "(som eval run --data NAME=SOURCE)"
        )
    needs_judge = [name for name in names if get_benchmark(name).needs_judge]
    if needs_judge and not judge:
        raise ValueError(f"{', '.join(needs_judge)} are graded by a judge model: pass judge='<model>[@<base_url>]'")
    return {name: given[name] for name in names}


def write_scores(eval_dir: str, benchmark: str, document: Mapping[str, Any]) -> str:
    """Write a benchmark's scores document (all variants) atomically; returns its URL."""
    url = storage.join(eval_dir, benchmark, "scores.json")
    storage.write_bytes_atomic(url, json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8"))
    return url
