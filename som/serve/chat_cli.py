"""`som chat`: talk to a SoM model about one image in the terminal.

The terminal side of som.serve.chat: it marks the image, prints where the marked image went
and its tag list, streams answers with the tags they mention highlighted, and handles the
slash commands. Rich renders; everything it shows is also plain text, so it reads the same
under tmux, over ssh or in a pipe.
"""

from __future__ import annotations

import logging
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from som.cli import parse_key_values
from som.serve.chat import ChatImage, Conversation, tag_rows

if TYPE_CHECKING:
    from rich.console import Console

    from som.eval.tagging import TagConfig
    from som.serve.engine import Engine
    from som.serve.marking import MarkedImage

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(tempfile.gettempdir()) / "som-chat"
TAG_STYLE = "bold black on yellow"
COMMANDS = """\
/image PATH        switch to another image (starts a new conversation)
/tags [KEY=VALUE]  mark the image again and list its tags; KEY is segmenter, a segmenter
                   parameter (n_segments, points_per_side, ...) or a mark option
                   (label_mode, min_tag_area, short_side, modes)
/save FILE         write the conversation as LLaVA JSON (a list of one record)
/help              this list
/quit              leave (Ctrl-D too); Ctrl-C stops an answer"""


@dataclass
class ChatSession:
    """What the REPL holds between lines: the engine, how to tag, and the conversation."""

    console: Console
    engine: Engine
    tags: TagConfig | None
    out_dir: Path
    max_tokens: int
    temperature: float
    conversation: Conversation | None = None

    @property
    def current(self) -> Conversation:
        """The conversation going on: `start` begins one before the REPL reads a line."""
        assert self.conversation is not None, "no conversation: start() first"
        return self.conversation

    def start(self, image: ChatImage) -> None:
        """A new conversation about `image` (written under `out_dir`, its tags listed)."""
        written = image.write(self.out_dir)
        self.conversation = Conversation(image, record_image=str(written))
        self.show_image(written)

    def show_image(self, written: Path) -> None:
        from rich.table import Table

        marked = self.current.image.marked
        if marked is None:
            self.console.print(Text.assemble("Image (untagged): ", (str(written), "bold")), soft_wrap=True)
            return
        segmenter = marked.segmenter
        params = " ".join(f"{k}={v}" for k, v in (segmenter.get("params") or {}).items())
        self.console.print(
            Text.assemble(
                "Marked image: ",
                (str(written), "bold"),
                f" ({marked.width}x{marked.height}, {len(marked.marks)} tags, {segmenter.get('name')} {params})",
            ),
            soft_wrap=True,
        )
        if marked.skipped:
            self.console.print(Text(f"No tags: {marked.skipped}; the model gets the image untagged.", "yellow"))
            return
        table = Table("tag", "box (x,y wxh)", "area", title="Tags", title_justify="left", box=None)
        for tag, box, area in tag_rows(marked):
            table.add_row(tag, box, str(area))
        self.console.print(table)

    def retag(self, settings: dict[str, str]) -> None:
        """Mark the current image again with `settings` applied (see COMMANDS); the
        conversation goes on when the marked image comes out the same."""
        from som.eval.tagging import TagConfig
        from som.mark import MarkOptions

        config = self.tags or TagConfig()
        options, params, segmenter = dict(config.mark_options), dict(config.params), config.segmenter
        for key, value in settings.items():
            if key == "segmenter":
                segmenter, params = value, {}
            elif key in MarkOptions.model_fields:
                options[key] = value.split(",") if key == "modes" else value  # typed by MarkOptions
            else:
                params[key] = value
        config = TagConfig.from_dict(
            {"segmenter": segmenter, "params": params, "mark_options": options, "cache_url": config.cache_url}
        )
        before = self.current
        image = load_image(Path(before.image.source), config)
        self.tags = config
        self.start(image)
        if before.image.sha256 == image.sha256:
            self.current.turns = before.turns
        elif before.turns:
            self.console.print("[dim]The tags changed: new conversation.[/]")

    def ask(self, question: str) -> None:
        """Stream the answer to `question`, tags highlighted as they appear."""
        from rich.live import Live

        shown = AnswerView(self.current.image.marked)
        self.console.print("[bold magenta]model ›[/]")
        with Live(shown.render(), console=self.console, auto_refresh=False, vertical_overflow="visible") as live:
            stream = self.current.ask(self.engine, question, max_tokens=self.max_tokens, temperature=self.temperature)
            for piece in stream:
                shown.add(piece)
                live.update(shown.render(), refresh=True)
        if not shown.text.strip():
            self.console.print("[dim](empty answer)[/]")
        mentioned = shown.mentioned()
        if mentioned:
            self.console.print(f"[dim]tags mentioned:[/] {', '.join(mentioned)}")


def load_image(path: Path, tags: TagConfig | None) -> ChatImage:
    """`path` read and (with `tags`) marked; ImageLoadError says why an image is unusable."""
    from som.images import ImageLoadError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageLoadError(str(path), f"cannot read file: {exc.strerror or exc}") from exc
    return ChatImage.load(data, str(path), tags)


class AnswerView:
    """The answer streamed so far, rendered with the tags it mentions highlighted."""

    def __init__(self, marked: MarkedImage | None) -> None:
        self.marked = marked
        self.text = ""

    def add(self, piece: str) -> None:
        self.text += piece

    def mentioned(self) -> list[str]:
        return self.marked.mentioned(self.text) if self.marked is not None else []

    def render(self) -> Text:
        from som.serve.marking import tag_spans

        text = Text(self.text)
        if self.marked is not None:
            tags = [m["tag"] for m in self.marked.marks]
            for start, end, _ in tag_spans(self.text, tags, self.marked.label_mode):
                text.stylize(TAG_STYLE, start, end)
        return text


def run_repl(session: ChatSession, read: Callable[[], str]) -> None:
    """Read lines until /quit or end of input; errors are printed and the session goes on."""
    import httpx

    from som.chat_api import ChatAPIError
    from som.images import ImageLoadError
    from som.serve.errors import EngineError, RequestError

    console = session.console
    console.print("[dim]Ask about the image, or /help for commands.[/]")
    while True:
        try:
            line = read().strip()
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:
            console.print("[dim](Ctrl-C: /quit or Ctrl-D leaves)[/]")
            continue
        if not line:
            continue
        try:
            if line.startswith("/"):
                if _command(session, line) == "quit":
                    return
            else:
                session.ask(line)
        except KeyboardInterrupt:
            console.print("\n[yellow]stopped; that answer is not kept[/]")
        except ImageLoadError as exc:
            console.print(Text(f"cannot use {exc.source}: {exc.reason}", "red"), soft_wrap=True)
        except (RequestError, EngineError, ValueError) as exc:
            console.print(Text(str(exc), "red"), soft_wrap=True)
        except click.ClickException as exc:  # a malformed KEY=VALUE
            console.print(Text(exc.format_message(), "red"), soft_wrap=True)
        except (ChatAPIError, httpx.HTTPError, OSError) as exc:
            console.print(Text(f"{type(exc).__name__}: {exc}", "red"), soft_wrap=True)


def _command(session: ChatSession, line: str) -> str | None:
    name, *args = shlex.split(line)
    console = session.console
    if name in ("/quit", "/exit", "/q"):
        return "quit"
    if name == "/image" and len(args) == 1:
        session.start(load_image(Path(args[0]).expanduser(), session.tags))
    elif name == "/tags":
        session.retag(parse_key_values(tuple(args)))
    elif name == "/save" and len(args) == 1:
        path = session.current.save(Path(args[0]).expanduser())
        turns = len(session.current.turns)
        console.print(
            Text.assemble(f"Saved {turns} turn{'s' * (turns != 1)} as LLaVA JSON: ", (str(path), "bold")),
            soft_wrap=True,
        )
    else:
        console.print(COMMANDS, markup=False)
    return None


@click.command("chat", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", help="Model folder or hub id to load in this process; with --url, the endpoint's model name.")
@click.option(
    "--url", help="Base URL of an OpenAI-compatible endpoint instead, e.g. http://127.0.0.1:8000/v1 (som serve)."
)
@click.option(
    "--api-key",
    envvar=["SOMFLOW_API_KEY", "OPENAI_API_KEY"],
    help="Key for --url (default: $SOMFLOW_API_KEY, which `som serve` checks, else $OPENAI_API_KEY).",
)
@click.option(
    "--tags",
    type=click.Choice(["auto", "none"]),
    default="auto",
    show_default=True,
    help="auto: mark the image here and send the marked one; none: send it as it is (use none with "
    "a `som serve --tags auto` server, which marks images itself).",
)
@click.option(
    "--segmenter",
    default="auto",
    show_default=True,
    help="sam | slic | felzenszwalb | hf-sam, or auto: sam when its checkpoint is cached, else slic.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Segmenter parameter (repeatable): the granularity, e.g. n_segments=30 or points_per_side=16.",
)
@click.option("--label-mode", type=click.Choice(["number", "alpha"]), default="number", show_default=True)
@click.option("--max-tokens", type=int, default=512, show_default=True, help="Longest answer, in tokens.")
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 answers greedily.")
@click.option("--prompt-profile", help="Prompt profile of a local model (default: detected, as in `som eval run`).")
@click.option("--device", default="auto", show_default=True, help="Local model: cuda, cuda:1, cpu or auto.")
@click.option("--dtype", default="auto", show_default=True, help="Local model: bfloat16, float16, float32 or auto.")
@click.option("--local-files-only", is_flag=True, help="Local model: never download, use the cache only.")
@click.option("--load-in-4bit", is_flag=True, help="Local model: quantize to 4 bits (bitsandbytes, CUDA).")
@click.option("--load-in-8bit", is_flag=True, help="Local model: quantize to 8 bits (bitsandbytes, CUDA).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Where the image sent to the model is written.",
)
def chat(
    image: Path,
    model: str | None,
    url: str | None,
    api_key: str | None,
    tags: str,
    segmenter: str,
    params: tuple[str, ...],
    label_mode: str,
    max_tokens: int,
    temperature: float,
    prompt_profile: str | None,
    device: str,
    dtype: str,
    local_files_only: bool,
    load_in_4bit: bool,
    load_in_8bit: bool,
    out_dir: Path,
) -> None:
    """Chat with a SoM model about IMAGE in the terminal.

    The image is marked first (numbered tags on its objects, as `som mark` draws them); the
    marked image is written under --out and its tags are listed. Ask questions about
    them; tag numbers in answers are highlighted. Type /help for the commands
    (/image, /tags, /save, /quit).

    \b
    Examples:
      som chat photo.jpg --model zzxslp/som-llava-v1.5-13b          # model in this process
      som chat photo.jpg --url http://127.0.0.1:8000/v1             # a running `som serve`
      som chat photo.jpg --url https://api.openai.com/v1 --model gpt-4o --segmenter slic
    """
    from rich.console import Console

    from som.eval.tagging import TagConfig
    from som.images import ImageLoadError

    if not model and not url:
        raise click.UsageError("give --model (a model to load here) or --url (an OpenAI-compatible endpoint)")
    console = Console(highlight=False)
    try:  # the settings and the image first: a bad one fails before a big model loads
        config = (
            TagConfig.from_dict(
                {"segmenter": segmenter, "params": parse_key_values(params), "mark_options": {"label_mode": label_mode}}
            )
            if tags == "auto"
            else None
        )
        with console.status("Marking the image..."):
            first = load_image(image, config)
    except ImageLoadError as exc:
        raise click.ClickException(f"cannot use {exc.source}: {exc.reason}") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    engine = _engine(
        console,
        model,
        url,
        api_key,
        prompt_profile=prompt_profile,
        device=device,
        dtype=dtype,
        local_files_only=local_files_only,
        load_in_4bit=load_in_4bit,
        load_in_8bit=load_in_8bit,
    )
    session = ChatSession(console, engine, config, out_dir, max_tokens, temperature)
    session.start(first)
    _enable_line_editing()
    run_repl(session, lambda: console.input("[bold cyan]you ›[/] "))


def _engine(console: Console, model: str | None, url: str | None, api_key: str | None, **local: Any) -> Engine:
    """The endpoint at `url`, else `model` loaded here with the `local` options; one that
    cannot be reached or loaded is a clean CLI error."""
    import httpx

    from som.serve.engine import local_engine, remote_engine

    try:
        if url:
            return remote_engine(url, model, api_key)
        assert model is not None  # chat() stops when given neither --model nor --url
        with console.status(f"Loading {model}..."):
            return local_engine(model, **local)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
    except (ValueError, RuntimeError) as exc:  # RequestError, EngineError, ModelSpecError, ChatAPIError
        raise click.ClickException(str(exc)) from None


def _enable_line_editing() -> None:
    """Arrow keys and history in the prompt, where Python has readline."""
    try:
        import readline  # noqa: F401 - importing it is what enables line editing in input()
    except ImportError:
        log.debug("no readline: plain input")
