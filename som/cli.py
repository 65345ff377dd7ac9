"""The `som` command. Heavy libraries are imported inside commands, so `som --help` is instant."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from som import __version__

log = logging.getLogger("som")


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def parse_key_values(pairs: tuple[str, ...]) -> dict[str, str]:
    """--param KEY=VALUE pairs as a dict (dashes in keys become underscores)."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        values[key.strip().replace("-", "_")] = value.strip()
    return values


ORCHESTRATION_PACKAGES = ("flows", "tasks", "infra")
"""somflow's top-level packages besides som (the project layout); their names are generic."""


class LazyGroup(click.Group):
    """A group whose heavier subcommand groups are imported only when invoked.

    `som --help` stays instant, and `som` itself never imports Prefect: the `dataset` commands
    live with the flows they run.
    """

    lazy: dict[str, tuple[str, str]] = {
        "data": ("som.data.cli:data", "Build, mix and check listing + QA instruction data (LLaVA JSON)."),
        "chat": (
            "som.serve.chat_cli:chat",
            "Chat with a SoM model about one image in the terminal (tags listed and highlighted).",
        ),
        "dataset": ("flows.cli:dataset", "Build and refresh SoM datasets in object storage (Prefect + Dask)."),
        "demo": (
            "som.serve.demo:demo",
            "Web page: upload an image, choose how it is marked, chat with a model about its tags.",
        ),
        "eval": (
            "som.eval.cli:eval_group",
            "Evaluate models on the benchmarks; score answers exactly as the official scripts do.",
        ),
        "serve": ("som.serve.cli:serve_group", "Serve a model on an OpenAI-compatible API (here or as a Slurm job)."),
        "train": (
            "flows.train_cli:train",
            "Train a LLaVA-style model on Slurm or locally (DeepSpeed); prints the export.",
        ),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, _, attribute = self.lazy[name][0].partition(":")
        imported = importlib.import_module(module)
        top = sys.modules[module.partition(".")[0]]
        if top.__name__ in ORCHESTRATION_PACKAGES and not getattr(top, "SOMFLOW_PACKAGE", False):
            raise click.ClickException(
                f"the '{top.__name__}' package at {getattr(top, '__file__', '?')} is not "
                "somflow's: another installed package of that name shadows it; install "
                "somflow in its own environment"
            )
        return getattr(imported, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            else:
                command = click.Group.get_command(self, ctx, name)
                assert command is not None, name  # list_commands gave it: a registered (non-lazy) command
                rows.append((name, command.get_short_help_str(60)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="somflow")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """somflow: Set-of-Mark data, training and evaluation for multimodal models.

    Start with `som mark IMAGES... --out DIR`: it segments each image, draws numbered
    tags on the objects and writes the marked image plus a JSON of every tag's mask.
    """
    _setup_logging(verbose)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--segmenter",
    default="auto",
    show_default=True,
    help="sam | slic | felzenszwalb | coco, or auto: sam when its checkpoint is cached, else slic.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Segmenter parameter (repeatable), e.g. --param points_per_side=16.",
)
@click.option(
    "--masks",
    type=click.Path(exists=True, dir_okay=False),
    help="COCO instances JSON: mark its annotated objects (implies --segmenter coco).",
)
@click.option("--label-mode", type=click.Choice(["number", "alpha"]), default="number", show_default=True)
@click.option(
    "--modes", default="mark", show_default=True, help="Comma-separated draw modes: mark, mask, box, contour."
)
@click.option(
    "--short-side",
    type=int,
    default=640,
    show_default=True,
    help="Resize the shorter side to this; 0 keeps the original size.",
)
@click.option(
    "--min-tag-area", type=int, default=110, show_default=True, help="Residual masks smaller than this get no tag."
)
@click.option("--format", "image_format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True)
@click.option(
    "--workers", type=int, default=0, help="Processes (default: one per core; 1 for GPU-model segmenters: sam, hf-sam)."
)
@click.option(
    "--max-aspect-ratio",
    type=float,
    default=30.0,
    show_default=True,
    help="Quarantine images whose longer side exceeds this many times the shorter (0: no limit); panoramas are 4-10:1.",
)
@click.option("--force", is_flag=True, help="Redo images whose outputs are already up to date.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def mark(
    inputs: tuple[str, ...],
    out_dir: str,
    segmenter: str,
    params: tuple[str, ...],
    masks: str | None,
    label_mode: str,
    modes: str,
    short_side: int,
    min_tag_area: int,
    image_format: str,
    workers: int,
    max_aspect_ratio: float,
    force: bool,
    no_progress: bool,
) -> None:
    """Draw Set-of-Mark tags on images (files or folders) into OUT.

    \b
    Examples:
      som mark photos/ --out marked/                     # SAM if cached, else SLIC
      som mark img.jpg --out marked/ --segmenter slic --modes mark,mask
      som mark val2017/ --out marked/ --masks instances_val2017.json

    Each image gives OUT/<name>.jpg and OUT/<name>.json (tags, COCO RLE masks, boxes,
    positions), <name> being its path relative to the inputs' common folder, without
    its extension: photos/ -> OUT/a/x.jpg for photos/a/x.jpg; img.jpg -> OUT/img.jpg;
    dupA/x.jpg dupB/x.jpg -> OUT/dupA/x.jpg, OUT/dupB/x.jpg. Names that would still
    clash keep their extension (a.jpg, a.png -> OUT/a.jpg.jpg, OUT/a.png.jpg).
    Unreadable files, extreme aspect ratios and images whose worker process died
    (retried once) are listed with reasons in OUT/quarantine.jsonl. Exits non-zero when
    no image could be processed or a worker died.
    """
    from som.mark.batch import mark_paths, mark_processes
    from som.mark.options import MarkOptions
    from som.segment import available, build_segmenter
    from som.segment.auto import choose_segmenter
    from som.settings import validate

    parsed = parse_key_values(params)
    if masks:
        if segmenter not in ("auto", "coco"):
            raise click.UsageError("--masks uses the coco segmenter; drop --segmenter or set it to coco")
        segmenter, parsed = "coco", {**parsed, "annotations": masks}
    elif segmenter == "auto":
        segmenter, parsed = choose_segmenter(parsed)
    try:
        options = validate(
            MarkOptions,
            {
                "short_side": short_side,
                "min_tag_area": min_tag_area,
                "label_mode": label_mode,
                "modes": [m.strip() for m in modes.split(",") if m.strip()],
            },
        )
        built = build_segmenter(segmenter, parsed)
    except (ValueError, RuntimeError) as exc:
        raise click.UsageError(str(exc)) from exc
    uses_gpu = available()[segmenter].uses_gpu
    workers = mark_processes(
        workers, segmenter=segmenter, uses_gpu=uses_gpu, gpus=_cuda_devices() if uses_gpu else 0, cpus=os.cpu_count()
    )
    summary = mark_paths(
        inputs,
        out_dir,
        built,
        options,
        image_format=image_format,  # type: ignore[arg-type]
        workers=workers,
        force=force,
        progress=not no_progress,
        max_aspect_ratio=max_aspect_ratio,
    )
    click.echo(f"{summary.line()} -> {out_dir}")
    if not summary.reports:
        raise click.ClickException("no images found in the given inputs")
    if summary.lost:
        click.echo(f"{summary.lost} image(s) killed their worker process; see {out_dir}/quarantine.jsonl", err=True)
        sys.exit(1)
    if summary.processed == 0:
        sys.exit(1)


def _cuda_devices() -> int:
    """GPUs torch can use here (torch is already loaded once a GPU segmenter is built)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@cli.command()
def segmenters() -> None:
    """List the segmenters and their parameters (pass them with --param KEY=VALUE)."""
    from som.segment import available

    for name, spec in available().items():
        click.echo(f"{name}: {spec.summary}")
        for field, info in spec.params_type.model_fields.items():
            click.echo(f"    {field} = {'(required)' if info.is_required() else repr(info.default)}")


EXTRAS = {
    "prefect": "orchestrate",
    "prefect_dask": "orchestrate",
    "dask": "orchestrate",
    "distributed": "orchestrate",
    "deepspeed": "train",
    "peft": "train",
    "openpyxl": "eval",
    "num2words": "eval",
    "fastapi": "serve",
    "uvicorn": "serve",
    "gradio": "serve",
    "rich": "serve",
    "vllm": "serve-vllm",
    "dask_jobqueue": "slurm",
    "dask_cuda": "gpu",
}
"""Top-level module -> the somflow extra that installs it (pyproject.toml)."""


def main() -> None:
    """`som`: a command whose optional dependencies are missing names the extra to install."""
    try:
        cli(prog_name="som")
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        raise SystemExit(
            f"Error: this command needs {exc.name}, from somflow's '{extra}' extra: "
            f"pip install 'somflow[{extra}]' (or 'somflow[all]')"
        ) from None


if __name__ == "__main__":
    main()
