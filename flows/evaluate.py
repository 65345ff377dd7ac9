"""Evaluate a model on benchmarks at scale: sharded Slurm job arrays, resumable answers, scores.

The flow reads top to bottom in the order data moves:

1. check the inputs (benchmark names, sources, variants, a judge where one is needed, the
   model: som.eval.model_check) before anything is submitted;
2. answer: one Slurm job array per (benchmark, variant), `shards` tasks each, every task
   running `som.eval.runner.answer_shard` on its stride of the questions. A task appends to
   its own ``<run_dir>/eval/<benchmark>/<variant>/responses-<shard>.jsonl`` and skips what is
   answered already, so a retried task, a rerun after a failure or a rerun of a finished
   evaluation redoes nothing (the arrays of a finished run load no model);
3. score each benchmark and variant from the merged answers (judge calls cached under
   ``<run_dir>/eval/_cache/judge``) into ``<run_dir>/eval/<benchmark>/scores.json``;
4. publish a table artifact: one row per benchmark, this model's plain / tags headline beside
   the published numbers of som/eval/published.json.

Run it with `som eval run` (flows/eval_cli.py), or from Python:

    evaluate(model="llava-hf/llava-1.5-13b-hf", benchmarks=["pope", "mme"],
             data={"pope": "/data/eval/pope", "mme": "/data/eval/MME"}, run_dir="runs/llava13b",
             shards=8, slurm={"partition": "gpu", "gpus_per_node": 1, "timeout_min": 120})
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run

from som import storage
from som.eval import report, runner
from som.eval.model_check import check_model_spec
from som.eval.registry import get_benchmark
from som.eval.resources import weight_bytes, with_eval_defaults
from som.eval.report import model_label
from som import jobs as som_jobs
from som.jobs import JobSpec
from tasks.reports import artifact_key
from tasks.slurm import run_job_array

"""Where submitit's pickles and logs go when the run folder is not a local path."""


def _run_name() -> str:
    params = flow_run.parameters
    return f"som-evaluate {model_label(str(params.get('model', '')))} {'+'.join(params.get('benchmarks') or [])}"


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


def check_inputs(benchmarks: list[str], data: Mapping[str, str], variants: list[str], shards: int,
                 judge: str | None) -> dict[str, str]:
    """Fail before submitting anything: unknown names, missing sources, a judge not given.
    Returns the sources by registry name ("llava-bench" and "llava_bench" are one benchmark)."""
    if not benchmarks:
        raise ValueError("no benchmark given")
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
        raise ValueError(f"no data source for {', '.join(missing)}: pass data={{name: folder or URL}} "
                         "(som eval run --data NAME=SOURCE)")
    needs_judge = [name for name in names if get_benchmark(name).needs_judge]
    if needs_judge and not judge:
        raise ValueError(f"{', '.join(needs_judge)} are graded by a judge model: pass judge='<model>[@<base_url>]'")
    return {name: given[name] for name in names}


@task(name="answer", task_run_name="answer {benchmark}/{variant}", cache_policy=NO_CACHE)
def answer_variant(model: str, benchmark: str, source: str, variant: str, *, shards: int, run_dir: str,
                   spec: JobSpec, retries: int, poll_s: float, limit: int | None, batch_size: int,
                   model_kwargs: dict | None, tag_options: dict | None) -> dict[str, int]:
    """One job array answering one variant of one benchmark, `shards` tasks; returns the
    summed counts (answered now, skipped as answered before, total)."""
    eval_dir = storage.join(run_dir, "eval")
    answer = functools.partial(runner.answer_shard, limit=limit, batch_size=batch_size,
                               model_kwargs=model_kwargs, tag_options=tag_options)
    arg_lists = [[model, benchmark, source, variant, shard, shards, eval_dir] for shard in range(shards)]
    counts = run_job_array(answer, arg_lists, spec=spec, folder=jobs_folder(run_dir, benchmark, variant),
                           name=f"som-eval-{benchmark}-{variant}", retries=retries, poll_s=poll_s)
    total = {key: sum(c[key] for c in counts) for key in ("answered", "skipped", "total")}
    get_run_logger().info("%s/%s: %d answered now, %d before, %d questions", benchmark, variant,
                          total["answered"], total["skipped"], total["total"])
    return total


@task(name="score", task_run_name="score {benchmark}", cache_policy=NO_CACHE)
def score_benchmark(benchmark: str, source: str, variants: list[str], eval_dir: str, *, model: str,
                    judge: str | None, limit: int | None, tag_options: dict | None) -> dict[str, Any]:
    """Score every variant of one benchmark and write its scores.json. Not retried: the judge
    client retries its own transient errors, and a missing answer needs a rerun, not a retry."""
    judge_model = make_judge(judge) if get_benchmark(benchmark).needs_judge else None
    try:
        by_variant = {variant: runner.score_variant(benchmark, source, variant, eval_dir, limit=limit,
                                                    judge=judge_model, tag_options=tag_options)
                      for variant in variants}
    finally:
        if judge_model is not None:
            judge_model.close()
    document = {"benchmark": benchmark, "model": model, "judge": judge, "limit": limit,
                "variants": by_variant}
    url = storage.join(eval_dir, benchmark, "scores.json")
    storage.write_bytes_atomic(url, json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8"))
    get_run_logger().info("%s: %s -> %s", benchmark,
                          {v: report.headline(s) for v, s in by_variant.items()}, url)
    return by_variant


@flow(name="som-evaluate", flow_run_name=_run_name)
def evaluate(
    model: str,
    benchmarks: list[str],
    run_dir: str,
    data: dict[str, str],
    variants: list[str] = ["plain", "tags"],  # noqa: B006 - Prefect shows defaults in the UI
    shards: int = 2,
    executor: str = "auto",
    slurm: dict | None = None,
    judge: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    model_kwargs: dict | None = None,
    tag_options: dict | None = None,
    retries: int = 1,
    poll_s: float = 5.0,
) -> dict[str, Any]:
    """Answer and score `benchmarks` with `model`; returns scores, answer counts and the table.

    Arguments:
      model: `som.eval.models.load_model` spec (hub id, local folder, openai:<model>@<url>).
      data: benchmark name -> its published files (folder or URL, see each benchmark module).
      variants: "plain" and/or "tags" (Set-of-Mark images, made per `tag_options`).
      shards: tasks per job array; slurm: `som.jobs.JobSpec` fields (partition, gpus_per_node,
        timeout_min, ...) applied to every task; executor: auto | slurm | local.
      judge: ``<model>[@<base_url>]`` for benchmarks graded by a judge (MM-Vet, LLaVA-Bench).
      limit: only the first `limit` items per benchmark; batch_size: questions per model call.
      model_kwargs: extra `load_model` arguments (dtype, device, local_files_only, prompt_profile,
        max_new_tokens: default each benchmark's own); the model is checked before any job.
      retries: Prefect retries of an array whose tasks failed (finished shards are skipped).
      poll_s: seconds between two looks at the arrays' states (one sacct call each).
    Returns ``{"scores": {benchmark: {variant: scores}}, "answered": {benchmark: {variant:
    questions answered by this run}}, "table": rows}``.
    """
    sources = check_inputs(benchmarks, data, variants, shards, judge)
    check_model_spec(model, local_files_only=bool((model_kwargs or {}).get("local_files_only")),
                     prompt_profile=(model_kwargs or {}).get("prompt_profile"))
    eval_dir = storage.join(run_dir, "eval")
    # Memory and CPUs from the model's size where the user set none (a 13B model on 1 CPU and
    # the partition's default memory does not load).
    local_only = bool((model_kwargs or {}).get("local_files_only"))
    slurm = with_eval_defaults(slurm, weight_bytes(model, local_files_only=local_only))
    spec = JobSpec.from_mapping({"executor": executor, **slurm})

    # Answer: one job array per (benchmark, variant), all submitted at once (the scheduler
    # decides what runs); each array task owns one shard file.
    futures = {(benchmark, variant): answer_variant.submit(
        model, benchmark, source, variant, shards=shards, run_dir=run_dir, spec=spec, retries=retries,
        poll_s=poll_s, limit=limit, batch_size=batch_size, model_kwargs=model_kwargs, tag_options=tag_options)
        for benchmark, source in sources.items() for variant in variants}
    wait(list(futures.values()))  # every array ends before a failure of one is raised
    answered: dict[str, dict[str, int]] = {}
    for (benchmark, variant), future in futures.items():
        answered.setdefault(benchmark, {})[variant] = future.result()["answered"]

    # Score each benchmark from the merged answers of its shards.
    scores = {benchmark: score_benchmark(benchmark, source, variants, eval_dir, model=model,
                                         judge=judge, limit=limit, tag_options=tag_options)
              for benchmark, source in sources.items()}

    # The table beside the published numbers.
    rows = report.comparison_rows(scores, model_label(model), variants)
    create_table_artifact(rows, key=artifact_key(run_dir, "eval"),
                          description=f"{model} on {', '.join(benchmarks)}\n\n{report.sources_markdown()}")
    return {"scores": scores, "answered": answered, "table": rows}
