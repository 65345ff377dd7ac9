"""`som data`: instruction data commands.

`mix` and `check` are Prefect-free and live here; `build` runs the instruction-data flow and is
imported from flows/cli.py only when invoked (the one rule of the `som` CLI: commands that run a
flow live with the flows, registered by "module:attribute"; everything else lives in som/).
"""

from __future__ import annotations

import click

from som.cli import LazyGroup


class DataGroup(LazyGroup):
    lazy = {
        "build": ("flows.cli:data_build", "Write listing + QA (+ mix) instruction data from a SoM dataset (Prefect).")
    }


@click.group("data", cls=DataGroup, context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Build "list items one by one" instruction data (LLaVA JSON) from SoM datasets."""


@data.command("mix")
@click.option("--base", "base", required=True, help="Base LLaVA instruction JSON (e.g. llava_v1_5_mix665k.json).")
@click.option(
    "--add",
    "added",
    multiple=True,
    required=True,
    help="Instruction JSON to mix in (repeatable), e.g. som_listing.json.",
)
@click.option("--out", "output", required=True, help="Output JSON (path or URL).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-root", default=None, help="Relative image paths resolve under this (checked to exist).")
@click.option(
    "--prefix",
    default=None,
    help="Prefix (e.g. som-) for added records whose ids collide; without it a collision is an error.",
)
@click.option(
    "--max-missing",
    type=int,
    default=0,
    show_default=True,
    help="Fail when more records than this reference missing images.",
)
def data_mix(base, added, output, seed, image_root, prefix, max_missing) -> None:
    """Shuffle a base instruction set and SoM data into one LLaVA JSON, in bounded memory.

    \b
    Example:
      som data mix --base llava_v1_5_mix665k.json --add som_listing.json --add som_qa.json \\
          --out mix.json --seed 0 --image-root /data/llava-images
    Ids stay unique, every image is checked, and a card (counts per source) is printed.
    """
    from som.data.mixing import MixConfig, MixError, MixSource, mix

    sources = [MixSource(base, kind="base")] + [MixSource(url, kind="som", id_prefix=prefix) for url in added]
    try:
        result = mix(sources, output, MixConfig(seed=seed, image_root=image_root, max_missing=max_missing))
    except MixError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.card_markdown())


@data.command("check")
@click.argument("file")
@click.option("--image-root", default=None, help="Relative image paths resolve under this (checked to exist).")
@click.option("--tokenizer", default=None, help="Tokenizer (hub id or local folder) for token-length statistics.")
@click.option("--max-length", type=int, default=2048, show_default=True, help="Token length reported as too long.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def data_check(file, image_root, tokenizer, max_length, as_json) -> None:
    """Validate a LLaVA instruction JSON: malformed entries, duplicate ids, empty answers,
    <image> misuse, missing images, and token lengths with a given tokenizer.

    Exits 1 when any problem is found (too-long records are reported, not failed).
    """
    import json

    from som.data.check import check_file, load_tokenizer

    try:
        report = check_file(
            file,
            image_root=image_root,
            tokenizer=load_tokenizer(tokenizer) if tokenizer else None,
            max_length=max_length,
        )
    except FileNotFoundError as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else "\n".join(report.lines()))
    if not report.ok:
        raise SystemExit(1)
