"""`som eval run`: evaluate a model on benchmarks as Slurm job arrays through the Prefect flow.

Only click is imported at module level so `som eval --help` stays instant.
"""

from __future__ import annotations

import json

import click

from som.cli import parse_key_values
from som.job_options import job_fields, job_options


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@click.command("run")
@click.option(
    "--model",
    required=True,
    help="Model spec: a hub id, a local folder (an exported run), or openai:<model>@<base-url>.",
)
@click.option(
    "--benchmark",
    "benchmarks",
    multiple=True,
    help="Benchmark name (repeatable): vqav2, gqa, vizwiz, sqa, textvqa, pope, mme, mmbench, mmbench_cn, seed, "
    "llava_bench, mmvet, listing.",
)
@click.option(
    "--suite",
    default=None,
    help="Run a named suite too: llava15 = LLaVA-1.5's 12 benchmarks + the SoM listing probe, with LLaVA-1.5's "
    "settings.",
)
@click.option(
    "--data-root",
    default=None,
    help="With --suite: the folder (or URL) in LLaVA's playground/data/eval layout (vqav2/, gqa/, scienceqa/, MME/, "
    "mmbench/, seed_bench/, mm-vet/, ...; som-listing/ for the listing probe).",
)
@click.option(
    "--data",
    "data",
    multiple=True,
    metavar="BENCH=SOURCE",
    help="Where a benchmark's published files are (folder or URL; repeatable); overrides --data-root for that "
    "benchmark.",
)
@click.option(
    "--variants",
    default=None,
    help="Comma-separated: plain (the benchmark's images), tags (Set-of-Mark images). Default plain,tags; with "
    "--suite, the suite's (plain).",
)
@click.option("--shards", type=int, default=2, show_default=True, help="Array tasks per benchmark and variant.")
@click.option(
    "--run-dir", required=True, help="Run folder (path or s3:// URL); answers and scores go under RUN_DIR/eval/."
)
@job_options(gpus_help="GPUs per array task (default 0).")
@click.option(
    "--judge",
    default=None,
    help="Judge model for MM-Vet / LLaVA-Bench: <model>[@<base-url>] (key from $OPENAI_API_KEY).",
)
@click.option("--limit", type=int, default=None, help="Only the first N items of each benchmark (smoke runs).")
@click.option(
    "--batch-size",
    type=int,
    default=8,
    show_default=True,
    help="Questions per model call and per write of a shard's answers.",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Answer length limit (default each benchmark's: 128 for short answers, 1024 for MM-Vet, LLaVA-Bench and "
    "listing).",
)
@click.option(
    "--prompt-profile",
    default=None,
    help="How questions are prompted: auto (default: llava-1.5 for LLaVA-1.5 models, else the chat template), "
    "llava-1.5, chat-template, paligemma, fuyu.",
)
@click.option(
    "--dtype",
    default=None,
    help="Model dtype, e.g. bfloat16, float16, float32 (default auto: bfloat16 on GPU, float32 on CPU).",
)
@click.option("--device", default=None, help="Model device, e.g. cuda, cpu (default auto).")
@click.option(
    "--local-files-only",
    is_flag=True,
    help="Load the model from local folders and the Hugging Face cache only (no download).",
)
@click.option(
    "--segmenter", default=None, help="Segmenter of the tags variant (default auto: SAM when cached, else SLIC)."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Segmenter parameter of the tags variant (repeatable).",
)
def run(
    model,
    benchmarks,
    suite,
    data_root,
    data,
    variants,
    shards,
    run_dir,
    executor,
    partition,
    account,
    qos,
    constraint,
    timeout_min,
    cpus_per_task,
    mem_gb,
    gpus_per_node,
    judge,
    limit,
    batch_size,
    max_new_tokens,
    prompt_profile,
    dtype,
    device,
    local_files_only,
    segmenter,
    params,
) -> None:
    """Answer every benchmark question with MODEL in sharded Slurm job arrays, then score.

    One job array per benchmark and variant, SHARDS tasks each; every task appends its
    answers to RUN_DIR/eval/<benchmark>/<variant>/responses-<shard>.jsonl and skips questions
    already answered, so rerunning the same command after a failure (or a killed task)
    answers only what is missing. Scores go to RUN_DIR/eval/<benchmark>/scores.json and a
    table beside the published numbers to the Prefect UI (and stdout). MODEL is checked (folder
    files, hub cache when offline, prompt profile) before anything is submitted.

    \b
    Examples:
      som eval run --model llava-hf/llava-1.5-13b-hf --benchmark pope --benchmark mme \\
          --data pope=/data/eval/pope --data mme=/data/eval/MME --run-dir runs/llava13b \\
          --shards 8 --partition gpu --gpus-per-task 1 --time 120
      som eval run --model runs/som-13b/hf --benchmark mmvet --data mmvet=s3://bench/mm-vet \\
          --judge gpt-4-0613 --variants plain --run-dir s3://runs/som-13b
      som eval run --model runs/som-13b/hf --suite llava15 --data-root playground/data/eval \\
          --judge gpt-4-0314 --run-dir runs/som-13b --shards 8 --partition gpu --gpus-per-task 1
    """
    if not benchmarks and not suite:
        raise click.UsageError("name at least one --benchmark, or a --suite (e.g. --suite llava15)")
    from som.eval.model_check import check_model_spec

    try:
        check_model_spec(model, local_files_only=local_files_only, prompt_profile=prompt_profile)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    from flows.evaluate import evaluate
    from flows.prefect_api import prefect_api

    sources = parse_key_values(data)
    model_kwargs = {
        "max_new_tokens": max_new_tokens,
        "prompt_profile": prompt_profile,
        "dtype": dtype,
        "device": device,
        "local_files_only": local_files_only or None,
    }
    slurm = job_fields(
        partition=partition,
        account=account,
        qos=qos,
        constraint=constraint,
        timeout_min=timeout_min,
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        gpus_per_node=gpus_per_node,
    )
    tag_options = {"segmenter": segmenter, "params": parse_key_values(params)} if segmenter or params else None
    with prefect_api():
        state = evaluate(
            model=model,
            benchmarks=list(benchmarks),
            run_dir=run_dir,
            data=sources,
            suite=suite,
            data_root=data_root,
            variants=_split(variants) if variants else None,
            shards=shards,
            executor=executor,
            slurm=slurm or None,
            judge=judge,
            limit=limit,
            batch_size=batch_size,
            model_kwargs={k: v for k, v in model_kwargs.items() if v is not None} or None,
            tag_options={k: v for k, v in (tag_options or {}).items() if v} or None,
            return_state=True,
        )
    if not state.is_completed():
        raise click.ClickException(f"evaluation {state.name.lower()}: {state.message}")
    result = state.result()
    click.echo(json.dumps(result["table"], indent=2, ensure_ascii=False))
    click.echo(f"scores: {run_dir.rstrip('/')}/eval/<benchmark>/scores.json")
