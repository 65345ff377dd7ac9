"""`som serve`: an OpenAI-compatible endpoint for a model (`som serve MODEL`), here or as a
Slurm job, and `som serve stop RUN`.

Only click and the standard library are imported at module level, so `som serve --help` is
instant; the engine, FastAPI and submitit are imported when a command runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from som.cli import parse_key_values
from som.job_options import job_fields, job_options

log = logging.getLogger(__name__)

API_KEY_ENV = "SOMFLOW_API_KEY"  # som.serve.endpoint.API_KEY_ENV, without importing it here


class _ServeGroup(click.Group):
    """`som serve MODEL ...` runs `start`; `som serve stop RUN` and `som serve start ...` work as
    usual subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group("serve", cls=_ServeGroup, context_settings={"help_option_names": ["-h", "--help"]})
def serve_group() -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    \b
    Quick start (listens on 127.0.0.1:8000; Ctrl-C stops it):
      som serve runs/my-run/export                      # a somflow export or any HF folder
      som serve llava-hf/llava-1.5-7b-hf --tags auto    # mark images before the model sees them
    then point any OpenAI client at http://127.0.0.1:8000/v1, e.g.
      curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "runs/my-run/export", "messages": [{"role": "user", "content": "Hi"}]}'

    \b
    On a Slurm GPU node (writes RUN/endpoint.json once it listens):
      som serve MODEL --slurm --gpus 1 --partition gpu --run-dir runs/serve1
      som eval run --model served:runs/serve1 ...       # evaluate through it
      som serve stop runs/serve1

    Questions get exactly the prompt and pixels `som eval run` gives the model (the same
    prompt profile). `som serve start --help` lists every option.
    """


@serve_group.command("start")
@click.argument("model")
@click.option(
    "--host",
    default=None,
    help="Address to listen on [default: 127.0.0.1; with --slurm, the node's "
    "address]. 0.0.0.0 exposes the server to the network: set --api-key then.",
)
@click.option(
    "--port",
    type=int,
    default=None,
    help="Port [default: 8000; with --slurm, a free port]; 0 picks a free one (see --run-dir to learn it).",
)
@click.option(
    "--engine",
    "engine_name",
    type=click.Choice(["transformers", "vllm"]),
    default="transformers",
    show_default=True,
    help="transformers: this process, one request at a time, answers equal `som eval`'s. "
    "vllm: vLLM's batched server with the matching chat template (pip install 'somflow[serve-vllm]').",
)
@click.option(
    "--served-model-name", "served_name", help="Model name clients send and /v1/models lists [default: MODEL as given]."
)
@click.option(
    "--prompt-profile",
    default=None,
    help="auto (default), llava-1.5, chat-template, paligemma or fuyu: "
    "how a conversation becomes the model's input, as in `som eval run`.",
)
@click.option("--device", default="auto", show_default=True, help="cuda, cuda:1, cpu; auto: cuda when available.")
@click.option(
    "--dtype",
    default="auto",
    show_default=True,
    help="float16, bfloat16, float32; auto: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU.",
)
@click.option(
    "--local-files-only", is_flag=True, help="Never download: the model must be a folder or in the Hugging Face cache."
)
@click.option("--load-in-4bit", is_flag=True, help="Quantize the weights to 4 bits (bitsandbytes, CUDA only).")
@click.option("--load-in-8bit", is_flag=True, help="Quantize the weights to 8 bits (bitsandbytes, CUDA only).")
@click.option(
    "--tags",
    type=click.Choice(["none", "auto"]),
    default="none",
    show_default=True,
    help="auto: draw Set-of-Mark tags on every image before the model sees it (as `som mark` does); "
    "responses carry the marks in their `som` field.",
)
@click.option(
    "--segmenter",
    default="auto",
    show_default=True,
    help="With --tags auto: sam, slic, felzenszwalb, "
    "... or auto (sam when its checkpoint is cached, else slic). See `som segmenters`.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Segmenter parameter (repeatable), e.g. --param points_per_side=16.",
)
@click.option(
    "--mark-option",
    "mark_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Marking style (repeatable): short_side, min_tag_area, label_mode=number|alpha, ...",
)
@click.option(
    "--api-key", envvar=API_KEY_ENV, help=f"Require 'Authorization: Bearer KEY' on /v1 requests [env {API_KEY_ENV}]."
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Largest max_tokens a request may ask for (and the default).",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Requests admitted at once (one generates, the others queue); more get HTTP 429.",
)
@click.option("--max-images", type=click.IntRange(min=0), default=4, show_default=True, help="Images per request.")
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=40_000_000,
    show_default=True,
    help="Pixels per image (width x height), checked before decoding.",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(min=0.001),
    default=32.0,
    show_default=True,
    help="Request body limit (images travel inside it).",
)
@click.option(
    "--max-image-mb",
    type=click.FloatRange(min=0.001),
    default=20.0,
    show_default=True,
    help="Encoded size of one image (inline or downloaded).",
)
@click.option("--no-image-urls", is_flag=True, help="Refuse http(s) image URLs (only inline data URLs).")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    help="Write RUN/endpoint.json (URL, model, job) "
    "once listening, for `served:RUN` evaluation and `som serve stop RUN`. Required with --slurm.",
)
@click.option("--slurm", is_flag=True, help="Run the server as a Slurm job (the other options below).")
@job_options(
    executor=False,
    gpus_flag="--gpus",
    gpus_help="--slurm: GPUs of the job (default 1).",
    time_help="--slurm: time limit of one run in minutes (default 1440); the job requeues itself "
    "before it (--max-requeues).",
    cpus_help="--slurm: CPUs of the job (default 4).",
)
@click.option(
    "--max-requeues",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="--slurm: how often the job may requeue itself.",
)
@click.option(
    "--setup",
    multiple=True,
    metavar="LINE",
    help="--slurm: shell line run before the server (module load ..., source venv/bin/activate); repeatable.",
)
@click.option(
    "--wait-s",
    type=click.FloatRange(min=0),
    default=1800,
    show_default=True,
    help="--slurm: how long to wait for the endpoint (0: return once submitted).",
)
def start(
    model: str,
    host: str | None,
    port: int | None,
    engine_name: str,
    served_name: str | None,
    prompt_profile: str | None,
    device: str,
    dtype: str,
    local_files_only: bool,
    load_in_4bit: bool,
    load_in_8bit: bool,
    tags: str,
    segmenter: str,
    params: tuple[str, ...],
    mark_options: tuple[str, ...],
    api_key: str | None,
    max_tokens: int,
    max_concurrency: int,
    max_images: int,
    max_pixels: int,
    max_body_mb: float,
    max_image_mb: float,
    no_image_urls: bool,
    run_dir: str | None,
    slurm: bool,
    partition: str | None,
    account: str | None,
    qos: str | None,
    constraint: str | None,
    timeout_min: int | None,
    cpus_per_task: int | None,
    mem_gb: float | None,
    gpus_per_node: int | None,
    max_requeues: int,
    setup: tuple[str, ...],
    wait_s: float,
) -> None:
    """Serve MODEL (a hub id or a folder) on an OpenAI-compatible API.

    \b
    Examples:
      som serve runs/r1/export                               # http://127.0.0.1:8000/v1
      som serve runs/r1/export --port 9000 --api-key SECRET  # clients send Bearer SECRET
      som serve runs/r1/export --tags auto --segmenter slic --param n_segments=60
      som serve runs/r1/export --slurm --gpus 1 --partition gpu --run-dir runs/serve1
    """
    from som.serve.launch import DEFAULT_PORT, ServeOptions

    if load_in_4bit and load_in_8bit:
        raise click.UsageError("pass one of --load-in-4bit and --load-in-8bit")
    if slurm and not run_dir:
        raise click.UsageError("--slurm needs --run-dir: the job writes RUN/endpoint.json there")
    options = ServeOptions(
        model=model,
        host=host or (None if slurm else "127.0.0.1"),
        port=port if port is not None else (0 if slurm else DEFAULT_PORT),
        served_name=served_name,
        prompt_profile=prompt_profile,
        device=device,
        dtype=dtype,
        local_files_only=local_files_only,
        load_in_4bit=load_in_4bit,
        load_in_8bit=load_in_8bit,
        tags=tags,
        segmenter=segmenter,
        params=parse_key_values(params),
        mark_options=_mark_options(mark_options),
        max_tokens=max_tokens,
        max_concurrency=max_concurrency,
        max_images=max_images,
        max_body_mb=max_body_mb,
        max_image_mb=max_image_mb,
        max_pixels=max_pixels,
        image_urls=not no_image_urls,
        log_level="info" if logging.getLogger().getEffectiveLevel() <= logging.INFO else "warning",
    )
    if engine_name == "vllm":
        _run_vllm(options, api_key, run_dir, slurm)
    elif slurm:
        resources = {
            "gpus_per_node": 1,
            "cpus_per_task": 4,
            "timeout_min": 24 * 60,  # a GPU server for a day
            **job_fields(
                partition=partition,
                account=account,
                qos=qos,
                constraint=constraint,
                timeout_min=timeout_min,
                cpus_per_task=cpus_per_task,
                mem_gb=mem_gb,
                gpus_per_node=gpus_per_node,
            ),
        }
        _submit(
            options, api_key, run_dir or "", resources=resources, max_requeues=max_requeues, setup=setup, wait_s=wait_s
        )
    else:
        _serve_here(options, api_key, run_dir)


def _mark_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """--mark-option values, modes as a comma list (MarkOptions reads the rest as typed text)."""
    values: dict[str, Any] = parse_key_values(pairs)
    if "modes" in values:
        values["modes"] = [m.strip() for m in values["modes"].split(",") if m.strip()]
    return values


def _serve_here(options: Any, api_key: str | None, run_dir: str | None) -> None:
    from som.serve.errors import EngineError
    from som.serve.launch import serve

    try:
        serve(options, api_key=api_key, run_dir=run_dir, announce=lambda line: click.echo(line, err=True))
    except (EngineError, ValueError, OSError) as exc:  # model spec, profile, marking options, port in use
        raise click.ClickException(str(exc)) from None


def _run_vllm(options: Any, api_key: str | None, run_dir: str | None, slurm: bool) -> None:
    import sys

    from som.serve.errors import EngineError
    from som.serve.vllm import run_vllm

    if slurm or run_dir:
        raise click.UsageError(
            "--engine vllm runs in the foreground here; --slurm/--run-dir need the "
            "transformers engine (or start vLLM inside your own job script)"
        )
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "somflow" / "vllm"
    try:
        sys.exit(run_vllm(options, api_key=api_key, template_folder=folder))
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None


def _submit(
    options: Any,
    api_key: str | None,
    run_dir: str,
    *,
    resources: dict[str, Any],
    max_requeues: int,
    setup: tuple[str, ...],
    wait_s: float,
) -> None:
    from som.jobs import JobSpec
    from som.serve.slurm import submit_server, wait_for_endpoint

    spec = JobSpec.from_mapping({"executor": "slurm", "max_requeues": max_requeues, "setup": setup, **resources})
    try:
        job = submit_server(options, spec, run_dir, api_key=api_key)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"submitted serve job {job.job_id}; endpoint will be in {Path(run_dir) / 'endpoint.json'}", err=True)
    if wait_s <= 0:
        return
    try:
        info = wait_for_endpoint(run_dir, job, timeout_s=wait_s)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"serving {info['model']} at {info['url']} (job {job.job_id} on {info['node']}); "
        f"stop with: som serve stop {run_dir}",
        err=True,
    )
    click.echo(info["url"])


@serve_group.command("stop")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def stop(run_dir: str) -> None:
    """Stop the server of RUN_DIR: cancel its Slurm job (or SIGTERM a local server started with
    --run-dir on this machine) and remove RUN_DIR/endpoint.json."""
    from som.serve.endpoint import EndpointError
    from som.serve.slurm import stop_server

    try:
        click.echo(stop_server(run_dir))
    except EndpointError as exc:
        raise click.ClickException(str(exc)) from None
