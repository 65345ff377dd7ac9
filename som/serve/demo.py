"""`som demo`: a web page to try a SoM model on your own images (Gradio).

What a person does there: upload an image (or pick an example), choose the segmenter and how
fine it cuts (SLIC `n_segments`, SAM `points_per_side`, ...) and how tags are drawn, and see
the marked image with its tag list; then chat with a model chosen from the configured
endpoints (LLaVA's model list, as OpenAI-compatible endpoints, plus an optional model loaded
in this process). Tags an answer mentions are outlined on the image; picking a tag from the
list, or clicking on the image, shows that tag's mask.

The page is a thin layer: marking is som.serve.marking, the conversation som.serve.chat
(the same as `som chat`), the models som.serve.engine. Gradio is imported only when the page
is built, so `som --help` stays fast and Gradio stays an optional extra (`.[serve]`).
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from som.cli import parse_key_values
from som.eval.tagging import TagConfig
from som.serve.chat import ChatImage, Conversation, tag_rows
from som.serve.marking import MarkedImage, tag_spans

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

    from som.serve.engine import Engine

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "tests" / "data"
"""The sample photos of a source checkout (absent from an installed wheel: then no gallery)."""


@dataclass(frozen=True)
class Knob:
    """The one parameter of a segmenter that sets how many pieces it cuts an image into."""

    param: str
    low: float
    high: float
    step: float
    help: str


GRANULARITY = {
    "slic": Knob("n_segments", 4, 300, 1, "about how many superpixels (more: smaller tags)"),
    "felzenszwalb": Knob("scale", 50, 2000, 10, "larger: fewer, bigger regions"),
    "sam": Knob("points_per_side", 4, 64, 1, "SAM's point grid (more: smaller objects found)"),
    "hf-sam": Knob("points_per_side", 4, 64, 1, "SAM's point grid (more: smaller objects found)"),
}


class Models:
    """The models the page offers, by name, each made on first use and then kept.

    A local model is loaded before the page opens (the first question should not wait for
    it); endpoints are contacted when first chosen, so one that is down only fails there."""

    def __init__(self, factories: Mapping[str, Callable[[], Engine]]) -> None:
        if not factories:
            raise ValueError("no model: give --model or at least one --endpoint")
        self._factories = dict(factories)
        self._engines: dict[str, Engine] = {}

    @property
    def names(self) -> list[str]:
        return list(self._factories)

    def get(self, name: str) -> Engine:
        if name not in self._engines:
            self._engines[name] = self._factories[name]()
        return self._engines[name]


def parse_endpoint(spec: str, api_key: str | None) -> tuple[str, Callable[[], Engine]]:
    """NAME=URL (the endpoint's first listed model) or NAME=MODEL@URL, as (name, factory)."""
    from som.serve.engine import remote_engine

    name, sep, target = spec.partition("=")
    if not sep or not name.strip() or not target.strip():
        raise click.BadParameter(f"expected NAME=URL or NAME=MODEL@URL, got {spec!r}", param_hint="--endpoint")
    model, at, url = target.strip().rpartition("@")
    if not at or "://" in model:
        model, url = "", target.strip()
    return name.strip(), lambda: remote_engine(url, model or None, api_key)


def example_images(folder: Path = EXAMPLES_DIR) -> list[str]:
    """Images under `folder` that load (tests/data also holds a deliberately truncated one)."""
    from som.images import IMAGE_EXTENSIONS, ImageLoadError, load_image

    found = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            load_image(path)
        except ImageLoadError as exc:
            log.info("example %s skipped: %s", path, exc.reason)
            continue
        found.append(str(path))
    return found


def segmenter_choices() -> tuple[list[str], str]:
    """Segmenters the page offers (coco needs an annotations file: not for uploads) and the
    default, what "auto" picks here (SAM when its checkpoint is cached, else SLIC)."""
    from som.segment import available
    from som.segment.auto import choose_segmenter

    names = [name for name in available() if name != "coco"]
    return names, choose_segmenter({})[0]


def default_params(segmenter: str) -> dict[str, Any]:
    from som.segment import available

    return available()[segmenter].params_type().model_dump()


def knob_settings(segmenter: str) -> dict[str, Any]:
    """The granularity slider for `segmenter` (hidden for one without a known knob)."""
    knob = GRANULARITY.get(segmenter)
    if knob is None:
        return {"visible": False, "value": None}
    return {
        "visible": True,
        "minimum": knob.low,
        "maximum": knob.high,
        "step": knob.step,
        "value": default_params(segmenter)[knob.param],
        "label": f"Granularity: {knob.param}",
        "info": knob.help,
    }


def tag_config(
    segmenter: str,
    granularity: float | None,
    extra: str,
    label_mode: str,
    modes: list[str],
    min_tag_area: float,
    short_side: float,
) -> TagConfig:
    """The page's marking controls as a TagConfig; ValueError names a bad entry."""
    params: dict[str, Any] = parse_key_values(tuple(p for p in re.split(r"[,\s]+", extra or "") if p))
    knob = GRANULARITY.get(segmenter)
    if knob is not None and granularity is not None and knob.param not in params:
        params[knob.param] = int(granularity) if float(granularity).is_integer() else granularity
    options = {
        "label_mode": label_mode,
        "modes": list(modes) or ["mark"],
        "min_tag_area": int(min_tag_area),
        "short_side": int(short_side),
    }
    return TagConfig.from_dict({"segmenter": segmenter, "params": params, "mark_options": options})


def answer_html(text: str, marked: MarkedImage | None) -> str:
    """The answer as HTML for the chat, with the tags it mentions in <mark>."""
    if marked is None:
        return html.escape(text)
    tags = [m["tag"] for m in marked.marks]
    pieces, last = [], 0
    for start, end, _ in tag_spans(text, tags, marked.label_mode):
        pieces += [html.escape(text[last:start]), f"<mark>{html.escape(text[start:end])}</mark>"]
        last = end
    return "".join(pieces) + html.escape(text[last:])


def _marked(image: ChatImage) -> MarkedImage:
    """The marks of a page image: the page loads every image with a TagConfig, so it is marked."""
    assert image.marked is not None, f"{image.source} was loaded without tags"
    return image.marked


def _picture(data: bytes) -> Image.Image:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data))


def _describe(marked: MarkedImage) -> str:
    segmenter = marked.segmenter
    params = ", ".join(f"{k}={v}" for k, v in (segmenter.get("params") or {}).items())
    if marked.skipped:
        return f"**No tags**: {marked.skipped}. The model gets the image untagged."
    return (
        f"**{len(marked.marks)} tags** on {marked.width}x{marked.height} ({segmenter.get('name')}: {params}). "
        "Pick a tag, or click it on the image or in the table, to see its mask."
    )


# ----------------------------------------------------------------------------- page


def build_demo(models: Models, examples: list[str], *, max_tokens: int = 512) -> gr.Blocks:
    """The page: marking controls and gallery, the marked image and its tags, the chat."""
    import gradio as gr

    names, default_segmenter = segmenter_choices()

    def knob_update(segmenter: str) -> dict:
        return gr.update(**knob_settings(segmenter))

    def mark(
        path: str | None,
        segmenter: str,
        granularity: float | None,
        extra: str,
        label_mode: str,
        modes: list[str],
        min_tag_area: float,
        short_side: float,
    ) -> tuple:
        from som.images import ImageLoadError

        empty: tuple[None, dict[str, Any], list[list[Any]], None, list[dict[str, str]]] = (
            None,
            gr.update(choices=[], value=None),
            [],
            None,
            [],
        )
        if not path:
            return ("Upload an image or pick an example.", *empty)
        try:
            config = tag_config(segmenter, granularity, extra, label_mode, modes, min_tag_area, short_side)
            image = ChatImage.load(Path(path).read_bytes(), Path(path).name, config)
        except ImageLoadError as exc:
            return (f"**Cannot use this image**: {exc.reason}", *empty)
        except (ValueError, RuntimeError, OSError) as exc:  # bad settings; a segmenter that cannot load
            return (f"**Cannot mark**: {exc}", *empty)
        marked = _marked(image)
        tags = [m["tag"] for m in marked.marks]
        return (
            _describe(marked),
            _picture(marked.image),
            gr.update(choices=tags, value=None),
            [list(row) for row in tag_rows(marked)],
            Conversation(image),
            [],
        )

    def show_tag(tag: str | None, conversation: Conversation | None) -> tuple:
        if conversation is None:
            return gr.update(), gr.update()
        marked = _marked(conversation.image)
        if not tag:
            return _picture(marked.image), _describe(marked)
        mark = marked.mark(tag)
        return (
            _picture(marked.highlight([tag])),
            "**Tag {}**: box {},{} {}x{}, {} px.".format(tag, *mark["bbox"], mark["area"]),
        )

    def pick_at(conversation: Conversation | None, event: gr.SelectData) -> dict:
        if conversation is None or not event.index:
            return gr.update()
        x, y = (int(v) for v in event.index[:2])
        return gr.update(value=_marked(conversation.image).tag_at(x, y))

    def pick_row(event: gr.SelectData) -> dict:
        return gr.update(value=str(event.row_value[0])) if event.row_value else gr.update()

    # Gradio passes the click to a parameter annotated gr.SelectData, which it finds with
    # typing.get_type_hints; `gr` is local here, so give it the class, not the string.
    pick_at.__annotations__["event"] = pick_row.__annotations__["event"] = gr.SelectData

    def ask(question: str, model: str, conversation: Conversation | None, history: list) -> Iterator[tuple]:
        import httpx

        from som.chat_api import ChatAPIError
        from som.serve.errors import EngineError, RequestError

        history = list(history or [])
        if conversation is None:
            yield history, question, gr.update(), "Upload and mark an image first.", conversation
            return
        if not question.strip():
            yield history, "", gr.update(), gr.update(), conversation
            return
        marked = _marked(conversation.image)
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        text = ""
        try:
            for piece in conversation.ask(models.get(model), question, max_tokens=max_tokens):
                text += piece
                history[-1] = {"role": "assistant", "content": answer_html(text, marked)}
                yield history, "", gr.update(), gr.update(), conversation
        except (RequestError, EngineError, ChatAPIError, httpx.HTTPError, ValueError, RuntimeError, OSError) as exc:
            history[-1] = {"role": "assistant", "content": f"⚠️ {html.escape(f'{type(exc).__name__}: {exc}')}"}
            yield history, question, gr.update(), gr.update(), conversation
            return
        if not text.strip():
            history[-1] = {"role": "assistant", "content": "<em>(empty answer)</em>"}
        mentioned = marked.mentioned(text)
        status = (
            f"Tags mentioned: **{', '.join(mentioned)}** (outlined)." if mentioned else "The answer mentions no tag."
        )
        yield history, "", _picture(marked.highlight(mentioned)), status, conversation

    def restart(conversation: Conversation | None) -> tuple:
        return [], (Conversation(conversation.image) if conversation is not None else None)

    with gr.Blocks(title="somflow: Set-of-Mark demo", analytics_enabled=False) as page:
        conversation = gr.State(None)
        gr.Markdown(
            "## Set-of-Mark demo\nUpload an image: it is cut into regions and each gets a numbered tag. "
            'Then ask the model about the tags ("What is tag 3?", "Which tag is the dog?").'
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                # image_mode=None: Gradio passes the file on without decoding it, so the safe loader
                # (pixel limits, corrupt data) is what judges it and says why.
                upload = gr.Image(
                    type="filepath",
                    image_mode=None,
                    label="Image",
                    sources=["upload", "clipboard"],
                    height=260,
                    elem_id="upload",
                )
                if examples:
                    gr.Examples([[path] for path in examples], inputs=[upload], label="Examples")
                segmenter = gr.Dropdown(names, value=default_segmenter, label="Segmenter", elem_id="segmenter")
                granularity = gr.Slider(elem_id="granularity", **knob_settings(default_segmenter))
                with gr.Accordion("More marking options", open=False):
                    extra = gr.Textbox(label="Segmenter parameters", placeholder="compactness=20 sigma=2")
                    label_mode = gr.Radio(["number", "alpha"], value="number", label="Tag labels")
                    modes = gr.CheckboxGroup(["mark", "mask", "box", "contour"], value=["mark"], label="Draw")
                    min_tag_area = gr.Number(110, precision=0, label="Smallest tagged region (px)")
                    short_side = gr.Number(640, precision=0, label="Resize short side to (0: keep)")
                mark_button = gr.Button("Mark", variant="primary", elem_id="mark")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload an image or pick an example.", elem_id="status")
                marked_view = gr.Image(
                    label="Marked image", type="pil", format="png", interactive=False, height=480, elem_id="marked"
                )
                with gr.Row():
                    tag_pick = gr.Dropdown(
                        [], label="Show a tag's mask", allow_custom_value=False, elem_id="tag-pick", scale=1
                    )
                    tags = gr.Dataframe(
                        headers=["tag", "box (x,y wxh)", "area"],
                        interactive=False,
                        max_height=220,
                        elem_id="tags",
                        scale=3,
                    )
            with gr.Column(scale=2):
                model = gr.Dropdown(models.names, value=models.names[0], label="Model", elem_id="model")
                chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chat", sanitize_html=True)
                question = gr.Textbox(
                    placeholder="Ask about the tags, e.g. What is tag 2?",
                    show_label=False,
                    elem_id="question",
                    submit_btn="Ask",
                )
                new_chat = gr.Button("New conversation", size="sm", elem_id="new-chat")

        marking = [upload, segmenter, granularity, extra, label_mode, modes, min_tag_area, short_side]
        marked_outputs = [status, marked_view, tag_pick, tags, conversation, chatbot]
        segmenter.change(knob_update, segmenter, granularity)
        upload.change(mark, marking, marked_outputs)
        mark_button.click(mark, marking, marked_outputs)
        # .input, not .change: marking resets the list without redrawing the image once more.
        tag_pick.input(show_tag, [tag_pick, conversation], [marked_view, status])
        marked_view.select(pick_at, conversation, tag_pick).then(
            show_tag, [tag_pick, conversation], [marked_view, status]
        )
        tags.select(pick_row, None, tag_pick).then(show_tag, [tag_pick, conversation], [marked_view, status])
        question.submit(
            ask, [question, model, conversation, chatbot], [chatbot, question, marked_view, status, conversation]
        )
        new_chat.click(restart, conversation, [chatbot, conversation])
    return page


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts: the default theme fetches Google
    fonts, which offline machines (and privacy-minded ones) cannot or should not."""
    import gradio as gr

    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


# ----------------------------------------------------------------------------- command


@click.command("demo", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    metavar="NAME=URL",
    help="An OpenAI-compatible endpoint to offer (repeatable): NAME=URL uses the first model it lists, "
    "NAME=MODEL@URL picks one. E.g. som13b=http://gpu-node:8000/v1.",
)
@click.option("--model", help="Also offer this model (folder or hub id), loaded in this process.")
@click.option(
    "--api-key",
    envvar=["SOMFLOW_API_KEY", "OPENAI_API_KEY"],
    help="Key for the endpoints (default: $SOMFLOW_API_KEY, which `som serve` checks, else $OPENAI_API_KEY).",
)
@click.option("--prompt-profile", help="Prompt profile of --model (default: detected, as in `som eval run`).")
@click.option("--device", default="auto", show_default=True, help="--model: cuda, cuda:1, cpu or auto.")
@click.option("--dtype", default="auto", show_default=True, help="--model: bfloat16, float16, float32 or auto.")
@click.option("--local-files-only", is_flag=True, help="--model: never download, use the cache only.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=512, show_default=True, help="Longest answer.")
@click.option(
    "--examples",
    "examples_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=EXAMPLES_DIR,
    show_default=True,
    help="Folder of example images for the gallery.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; the default keeps the page on this machine (use an ssh tunnel).",
)
@click.option("--port", type=int, default=7860, show_default=True, help="Port of the page.")
def demo(
    endpoints: tuple[str, ...],
    model: str | None,
    api_key: str | None,
    prompt_profile: str | None,
    device: str,
    dtype: str,
    local_files_only: bool,
    max_tokens: int,
    examples_dir: Path,
    host: str,
    port: int,
) -> None:
    """Web page to try a SoM model: upload an image, mark it, chat about its tags.

    Choose the segmenter and its granularity, see the numbered tags, ask a model picked
    from --endpoint servers (or --model, loaded here); tags an answer mentions are
    outlined on the image, and picking a tag shows its mask. Needs the `serve` extra
    (pip install -e '.[serve]'). Open the printed URL in a browser.

    \b
    Examples:
      som serve MODEL --port 8000 &                # one terminal: the model server
      som demo --endpoint som=http://127.0.0.1:8000/v1
      som demo --model zzxslp/som-llava-v1.5-13b   # model in this process
      ssh -L 7860:127.0.0.1:7860 gpu-node          # then open http://127.0.0.1:7860 here
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home
    try:
        import gradio  # noqa: F401 - fail early with the install hint
    except ImportError:
        raise click.ClickException("som demo needs Gradio: pip install -e '.[serve]'") from None
    factories = dict(parse_endpoint(spec, api_key) for spec in endpoints)
    if model:
        local = _load_local(
            model, prompt_profile=prompt_profile, device=device, dtype=dtype, local_files_only=local_files_only
        )
        factories = {f"{Path(model.rstrip('/')).name} (this process)": lambda: local, **factories}
    try:
        models = Models(factories)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    page = build_demo(models, example_images(examples_dir), max_tokens=max_tokens)
    click.echo(f"som demo: http://{host}:{port} (models: {', '.join(models.names)}); Ctrl-C stops it")
    page.queue().launch(
        server_name=host, server_port=port, show_error=True, quiet=True, ssr_mode=False, theme=theme(), footer_links=[]
    )


def _load_local(model: str, **options: Any) -> Engine:
    from som.serve.engine import local_engine

    click.echo(f"loading {model}...")
    try:
        return local_engine(model, **options)
    except (ValueError, RuntimeError) as exc:  # EngineError, ModelSpecError, ProfileError
        raise click.ClickException(str(exc)) from None
