"""Evaluate a model on benchmarks at scale: sharded Slurm job arrays, resumable answers, scores.

The flow reads top to bottom in the order data moves:

1. check the inputs (a suite's benchmarks and their folders, benchmark names, sources,
   variants, a judge where one is needed, the model: som.eval.model_check) and read every
   benchmark's items once, before anything is submitted;
2. answer: one Slurm job array per (benchmark, variant), `shards` tasks each, every task
   running `som.eval.runner.answer_shard` on its stride of the questions. A task appends to
   its own ``<run_dir>/eval/<benchmark>/<variant>/responses-<shard>.jsonl`` and skips what is
   answered already, so a retried task, a rerun after a failure or a rerun of a finished
   evaluation redoes nothing (the arrays of a finished run load no model);
3. score each benchmark and variant from the merged answers (judge calls cached under
   ``<run_dir>/eval/_cache/judge``) into ``<run_dir>/eval/<benchmark>/scores.json``; splits
   scored by a server (VQAv2 test-dev, VizWiz test, GQA without its answer key, ...) write
   their upload file into ``<run_dir>/eval/<benchmark>/<variant>/`` instead of a headline;
4. publish a table artifact: one row per benchmark, this model's plain / tags headline beside
   the published numbers of som/eval/published.json.

Run it with `som eval run` (flows/eval_cli.py), or from Python:

    evaluate(model="llava-hf/llava-1.5-13b-hf", benchmarks=["pope", "mme"],
             data={"pope": "/data/eval/pope", "mme": "/data/eval/MME"}, run_dir="runs/llava13b",
             shards=8, slurm={"partition": "gpu", "gpus_per_node": 1, "timeout_min": 120})
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.runtime import flow_run

from som import storage
from som.eval import report
from som.eval.model_check import check_model_spec
from som.eval.options import check_model_options, check_tag_options
from som.eval.plan import check_inputs, suite_inputs
from som.eval.report import model_label
from som.eval.resources import weight_bytes, with_eval_defaults
from som.jobs import JobSpec
from tasks.evaluate import answer_variant, load_items, score_benchmark
from tasks.reports import artifact_key


def _run_name() -> str:
    params = flow_run.parameters
    names = ([f"suite:{params['suite']}"] if params.get("suite") else []) + list(params.get("benchmarks") or [])
    return f"som-evaluate {model_label(str(params.get('model', '')))} {'+'.join(names)}"


@flow(name="som-evaluate", flow_run_name=_run_name)
def evaluate(
    model: str,
    benchmarks: list[str] | None = None,
    run_dir: str = "",
    data: dict[str, str] | None = None,
    variants: list[str] | None = None,
    suite: str | None = None,
    data_root: str | None = None,
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
      variants: "plain" and/or "tags" (Set-of-Mark images, made per `tag_options`); default
        both, or the suite's (plain for llava15).
      suite: a named suite (som.eval.suites, e.g. "llava15": LLaVA-1.5's 12 benchmarks and
        the listing probe) run in addition to `benchmarks`; data_root: the folder holding
        each suite benchmark's files in LLaVA's playground/data/eval layout.
      shards: tasks per job array; slurm: `som.jobs.JobSpec` fields (partition, gpus_per_node,
        timeout_min, ...) applied to every task; executor: auto | slurm | local.
      judge: ``<model>[@<base_url>]`` for benchmarks graded by a judge (MM-Vet, LLaVA-Bench).
      limit: only the first `limit` items per benchmark; batch_size: questions per model call.
      model_kwargs: extra `load_model` arguments, `som.eval.options.ModelOptions` fields (dtype,
        device, local_files_only, prompt_profile, max_new_tokens: default each benchmark's own);
        they, `tag_options` (`som.eval.tagging.TagConfig` fields) and the model are checked
        before any job.
      retries: Prefect retries of an array whose tasks failed (finished shards are skipped).
      poll_s: seconds between two looks at the arrays' states (one sacct call each).
    Returns ``{"scores": {benchmark: {variant: scores}}, "answered": {benchmark: {variant:
    questions answered by this run}}, "table": rows}``.
    """
    if not run_dir:
        raise ValueError("run_dir is required: the folder or URL answers and scores go to")
    benchmarks, data, variants = suite_inputs(suite, benchmarks, data or {}, data_root, variants)
    sources = check_inputs(benchmarks, data, variants, shards, judge)
    model_kwargs, tag_options = check_model_options(model_kwargs), check_tag_options(tag_options)
    local_only = bool(model_kwargs.get("local_files_only"))
    check_model_spec(model, local_files_only=local_only, prompt_profile=model_kwargs.get("prompt_profile"))
    eval_dir = storage.join(run_dir, "eval")
    # Memory and CPUs from the model's size where the user set none (a 13B model on 1 CPU and
    # the partition's default memory does not load).
    slurm = with_eval_defaults(slurm, weight_bytes(model, local_files_only=local_only))
    spec = JobSpec.from_mapping({"executor": executor, **slurm})

    # Read every benchmark's items once here: a broken source fails before any job, and what
    # loading materialises (MMBench's decoded images, SEED's video frames) is not redone by
    # every array task at once.
    for benchmark, source in sources.items():
        load_items(benchmark, source, limit=limit)

    # Answer: one job array per (benchmark, variant), all submitted at once (the scheduler
    # decides what runs); each array task owns one shard file.
    futures = {
        (benchmark, variant): answer_variant.submit(
            model,
            benchmark,
            source,
            variant,
            shards=shards,
            run_dir=run_dir,
            spec=spec,
            retries=retries,
            poll_s=poll_s,
            limit=limit,
            batch_size=batch_size,
            model_kwargs=model_kwargs,
            tag_options=tag_options,
        )
        for benchmark, source in sources.items()
        for variant in variants
    }
    wait(list(futures.values()))  # every array ends before a failure of one is raised
    answered: dict[str, dict[str, int]] = {}
    for (benchmark, variant), future in futures.items():
        answered.setdefault(benchmark, {})[variant] = future.result()["answered"]

    # Score each benchmark from the merged answers of its shards.
    scores = {
        benchmark: score_benchmark(
            benchmark, source, variants, eval_dir, model=model, judge=judge, limit=limit, tag_options=tag_options
        )
        for benchmark, source in sources.items()
    }

    # The table beside the published numbers.
    rows = report.comparison_rows(scores, model_label(model), variants)
    create_table_artifact(
        rows,
        key=artifact_key(run_dir, "eval"),
        description=f"{model} on {', '.join(benchmarks)}\n\n{report.sources_markdown()}",
    )
    return {"scores": scores, "answered": answered, "table": rows}
