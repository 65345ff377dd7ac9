"""The som-evaluate flow's tasks: one Slurm job array per (benchmark, variant), then scoring.

Each wraps a Prefect-free step (som.eval.runner, som.eval.plan) with Prefect's logging; neither
is cached or retried by Prefect (the arrays retry their own failed tasks, a finished shard is
skipped, and a missing answer needs a rerun, not a retry).
"""

from __future__ import annotations

import functools
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from som import storage
from som.eval import report, runner
from som.eval.plan import jobs_folder, make_judge, write_scores
from som.eval.registry import get_benchmark
from som.jobs import JobSpec
from tasks.slurm import run_job_array


@task(name="load-items", task_run_name="load {benchmark}", cache_policy=NO_CACHE)
def load_items(benchmark: str, source: str, *, limit: int | None) -> int:
    """Read a benchmark's items from its source (what every array task reads again); returns
    how many there are."""
    items = get_benchmark(benchmark).load_items(source, limit=limit)
    get_run_logger().info("%s: %d items from %s", benchmark, len(items), source)
    return len(items)


@task(name="answer", task_run_name="answer {benchmark}/{variant}", cache_policy=NO_CACHE)
def answer_variant(
    model: str,
    benchmark: str,
    source: str,
    variant: str,
    *,
    shards: int,
    run_dir: str,
    spec: JobSpec,
    retries: int,
    poll_s: float,
    limit: int | None,
    batch_size: int,
    model_kwargs: dict | None,
    tag_options: dict | None,
) -> dict[str, int]:
    """One job array answering one variant of one benchmark, `shards` tasks; returns the
    summed counts (answered now, skipped as answered before, total)."""
    eval_dir = storage.join(run_dir, "eval")
    answer = functools.partial(
        runner.answer_shard, limit=limit, batch_size=batch_size, model_kwargs=model_kwargs, tag_options=tag_options
    )
    arg_lists = [[model, benchmark, source, variant, shard, shards, eval_dir] for shard in range(shards)]
    counts = run_job_array(
        answer,
        arg_lists,
        spec=spec,
        folder=jobs_folder(run_dir, benchmark, variant),
        name=f"som-eval-{benchmark}-{variant}",
        retries=retries,
        poll_s=poll_s,
    )
    total = {key: sum(c[key] for c in counts) for key in ("answered", "skipped", "total")}
    get_run_logger().info(
        "%s/%s: %d answered now, %d before, %d questions",
        benchmark,
        variant,
        total["answered"],
        total["skipped"],
        total["total"],
    )
    return total


@task(name="score", task_run_name="score {benchmark}", cache_policy=NO_CACHE)
def score_benchmark(
    benchmark: str,
    source: str,
    variants: list[str],
    eval_dir: str,
    *,
    model: str,
    judge: str | None,
    limit: int | None,
    tag_options: dict | None,
) -> dict[str, Any]:
    """Score every variant of one benchmark and write its scores.json. Not retried: the judge
    client retries its own transient errors, and a missing answer needs a rerun, not a retry."""
    judge_model = make_judge(judge) if get_benchmark(benchmark).needs_judge else None
    try:
        by_variant = {
            variant: runner.score_variant(
                benchmark, source, variant, eval_dir, limit=limit, judge=judge_model, tag_options=tag_options
            )
            for variant in variants
        }
    finally:
        if judge_model is not None:
            judge_model.close()
    document = {"benchmark": benchmark, "model": model, "judge": judge, "limit": limit, "variants": by_variant}
    url = write_scores(eval_dir, benchmark, document)
    get_run_logger().info("%s: %s -> %s", benchmark, {v: report.headline(s) for v, s in by_variant.items()}, url)
    return by_variant
