"""`som demo` in headless Chromium (Debian's, driven by Playwright): upload, mark, ask, see
the answer with its tags highlighted, pick a tag to see its mask.

The page runs as `som demo` in a subprocess with two models: the tiny random LLaVA loaded
in-process, and an OpenAI-compatible endpoint (tests/helpers/chat_server.py, the project's
stand-in for paid services) scripted to stream an answer that names tags, since a random
model never names one on purpose. Screenshots go to test-artifacts/serve/ (git-ignored) for a
person to look at.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from som.eval.tagging import TagConfig
from som.serve.demo import answer_html, parse_endpoint, tag_config
from som.serve.marking import mark_image
from tests.helpers.chat_server import ChatServer, Reply
from tests.helpers.data import DATA_DIR, data_path
from tests.helpers.stack import free_port
from tests.helpers.tiny_llava import build_tiny_llava

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "serve"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCRIPTED = "Tag 2 is a tree; [5] is a building, 3.5 m away."
# The page's default marking: SLIC (no SAM checkpoint on test machines) at its default granularity.
DEFAULT_TAGS = TagConfig(
    segmenter="slic",
    params={"n_segments": 48},
    mark_options={"label_mode": "number", "modes": ["mark"], "min_tag_area": 110, "short_side": 640},
)


def sse(*pieces: str) -> bytes:
    """A streamed chat completion (server-sent events) of `pieces`."""
    events = [{"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]} for piece in pieces]
    events[-1]["choices"][0]["finish_reason"] = "stop"
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def endpoint():
    server = ChatServer().start()
    server.script = [
        Reply(body=sse("Tag 2 is a tree; ", "[5] is a building, 3.5 m away."), headers={"Cache-Control": "no-cache"})
    ]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory, endpoint: ChatServer):
    model = build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "tiny")
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    command = [
        str(Path(sys.executable).with_name("som")),
        "demo",
        "--model",
        model,
        "--port",
        str(port),
        "--endpoint",
        f"scripted=gpt-som@{endpoint.url}",
        "--examples",
        str(DATA_DIR),
        "--max-tokens",
        "24",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"som demo did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, demo_url):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    opened = context.new_page()
    opened.goto(demo_url)
    opened.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
    yield opened
    context.close()


def status(page) -> str:
    return page.inner_text("#status")


def wait_status(page, text: str, timeout: float = 90_000) -> str:
    page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text, timeout=timeout)
    return status(page)


def shown_image(page) -> np.ndarray:
    """The pixels of the marked image as the page shows them (fetched from the page's src)."""
    source = page.locator("#marked img").get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(source).body())).convert("RGB"))


def wait_image_change(page, before: str | None) -> None:
    """Until the marked image shows a new picture, loaded, with no event pending on it."""
    page.wait_for_function(
        "b => { const i = document.querySelector('#marked img'); return i && i.src !== b && i.complete "
        "&& i.naturalWidth > 0 && document.querySelector('#marked [data-testid=status-tracker].hide'); }",
        arg=before,
        timeout=60_000,
    )


def image_src(page) -> str | None:
    found = page.locator("#marked img")
    return found.get_attribute("src") if found.count() else None


def upload(page, path: Path) -> str:
    page.set_input_files("#upload input[type=file]", str(path))
    return wait_status(page, "tags on")


def click_image(page, x: int, y: int) -> None:
    """Click pixel (x, y) of the marked image, which the page scales down to fit (object-fit)."""
    where = page.evaluate(
        """([x, y]) => {
        const img = document.querySelector('#marked img'), r = img.getBoundingClientRect();
        const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
        return [r.x + (r.width - img.naturalWidth * scale) / 2 + (x + 0.5) * scale,
                r.y + (r.height - img.naturalHeight * scale) / 2 + (y + 0.5) * scale];
    }""",
        [x, y],
    )
    page.mouse.click(*where)


def table_rows(page) -> int:
    """Rows of the tag table (a virtual table: not all rows are in the DOM at once)."""
    return int(page.get_attribute("#tags [role=grid]", "aria-rowcount")) - 1  # minus the header


def cell(page, row: int, column: int) -> str:
    return page.inner_text(f"#tags [data-testid='cell-{row}-{column}']").strip()


def ask(page, question: str, answers: int) -> None:
    page.fill("#question textarea", question)
    page.press("#question textarea", "Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('#chat .bot').length >= n && "
        "/mention/.test(document.querySelector('#status').innerText)",
        arg=answers,
        timeout=120_000,
    )


def choose(page, dropdown: str, option: str) -> None:
    page.click(f"{dropdown} input")
    page.get_by_role("option", name=option, exact=True).click()


def test_upload_mark_and_ask_the_local_model(page):
    """Upload a photo: the marked image and its tag table appear; a question to the tiny
    in-process model gets an answer in the chat."""
    text = upload(page, data_path("extreme_ironing.jpg"))
    expected = mark_image(data_path("extreme_ironing.jpg").read_bytes(), DEFAULT_TAGS)
    assert f"{len(expected.marks)} tags on 960x640 (slic: n_segments=48" in text
    wait_image_change(page, None)
    assert (shown_image(page) == expected.rgb()).all(), "the page shows the image the model gets"
    assert table_rows(page) == len(expected.marks) and cell(page, 0, 0) == "1"
    assert cell(page, 0, 1) == "{},{} {}x{}".format(*expected.mark("1")["bbox"])

    ask(page, "What is the man doing?", 1)
    assert page.locator("#chat .user").first.inner_text().strip() == "What is the man doing?"
    assert page.locator("#chat .bot").first.inner_text().strip()
    page.screenshot(path=str(ARTIFACTS / "demo-local-answer.png"), full_page=True)


def test_endpoint_answer_highlights_its_tags(page, endpoint):
    """The scripted endpoint names tags 2 and 5: the answer marks them, the image outlines
    them (the same pixels MarkedImage.highlight draws), and the endpoint got the marked PNG."""
    upload(page, data_path("extreme_ironing.jpg"))
    expected = mark_image(data_path("extreme_ironing.jpg").read_bytes(), DEFAULT_TAGS)
    wait_image_change(page, None)
    before = image_src(page)
    choose(page, "#model", "scripted")
    ask(page, "Which tags show a tree and a building?", 1)
    assert "Tags mentioned: 2, 5" in status(page)
    answer = page.locator("#chat .bot").first
    assert answer.inner_text().strip() == SCRIPTED
    assert answer.locator("mark").all_inner_texts() == ["2", "5"]
    wait_image_change(page, before)
    assert (shown_image(page) == np.asarray(Image.open(io.BytesIO(expected.highlight(["2", "5"]))))).all()
    page.screenshot(path=str(ARTIFACTS / "demo-endpoint-highlight.png"), full_page=True)

    request = endpoint.requests[-1].body
    assert request["model"] == "gpt-som" and request["stream"] is True
    picture = request["messages"][0]["content"][0]["image_url"]["url"]
    assert picture.startswith("data:image/png;base64,")
    assert base64.b64decode(picture.split(",", 1)[1]) == expected.image


def test_picking_or_clicking_a_tag_shows_its_mask(page):
    upload(page, data_path("extreme_ironing.jpg"))
    expected = mark_image(data_path("extreme_ironing.jpg").read_bytes(), DEFAULT_TAGS)
    wait_image_change(page, None)
    before = image_src(page)
    choose(page, "#tag-pick", "3")
    text = wait_status(page, "Tag 3:")
    assert "box {},{} {}x{}".format(*expected.mark("3")["bbox"]) in text
    wait_image_change(page, before)
    assert (shown_image(page) == np.asarray(Image.open(io.BytesIO(expected.highlight(["3"]))))).all()
    page.screenshot(path=str(ARTIFACTS / "demo-tag-mask.png"), full_page=True)

    # Click tag 7's label on the shown image: the list follows and its mask shows.
    wait_image_change(page, None)
    click_image(page, *expected.mark("7")["position"])
    wait_status(page, "Tag 7:")
    assert page.input_value("#tag-pick input") == "7"

    # And a row of the tag table.
    page.click("#tags [data-testid='cell-1-0']")
    wait_status(page, "Tag 2:")


def test_gallery_granularity_and_alpha_labels(page):
    """An example from the gallery, re-marked coarser and with letter tags."""
    page.locator(".gallery-item").nth(1).click()
    text = wait_status(page, "tags on")
    assert "959x640" in text, "the second example is waterview.jpg"
    page.fill("#granularity input[type=number]", "8")
    page.locator("#granularity input[type=number]").press("Enter")
    page.get_by_text("More marking options").click()
    page.get_by_label("alpha").check()
    page.click("#mark")
    coarse = mark_image(
        data_path("waterview.jpg").read_bytes(),
        TagConfig(
            segmenter="slic",
            params={"n_segments": 8},
            mark_options={**DEFAULT_TAGS.mark_options, "label_mode": "alpha"},
        ),
    )
    text = wait_status(page, f"{len(coarse.marks)} tags on 959x640 (slic: n_segments=8,")
    assert cell(page, 0, 0) == "a" and table_rows(page) == len(coarse.marks)


def test_unusable_uploads_say_why(page, tmp_path):
    """The safe loader judges uploads (Gradio passes them on undecoded): a truncated PNG and
    a 40:1 strip are refused with the reason, and a good upload works again afterwards."""
    page.set_input_files("#upload input[type=file]", str(data_path("som_logo.png")))
    assert "corrupt or truncated image data" in wait_status(page, "Cannot use this image")
    strip = tmp_path / "strip.png"
    Image.new("RGB", (400, 10), "gray").save(strip)
    page.set_input_files("#upload input[type=file]", str(strip))
    assert "extreme aspect ratio 400x10 (40.0:1)" in wait_status(page, "extreme aspect")
    upload(page, data_path("waterview.jpg"))


def test_answer_html_escapes_and_marks():
    marked = mark_image(data_path("waterview.jpg").read_bytes(), TagConfig(segmenter="slic", params={"n_segments": 8}))
    assert answer_html("<b>tag 2</b> & 3.5", marked) == "&lt;b&gt;tag <mark>2</mark>&lt;/b&gt; &amp; 3.5"


def test_controls_become_a_tag_config():
    config = tag_config("slic", 30.0, "compactness=20, sigma=2", "alpha", ["mark", "box"], 50, 512)
    assert config.params == {"compactness": "20", "sigma": "2", "n_segments": 30}
    assert config.mark_options == {
        "label_mode": "alpha",
        "modes": ["mark", "box"],
        "min_tag_area": 50,
        "short_side": 512,
    }
    assert tag_config("slic", 30, "n_segments=12", "number", [], 110, 640).params == {"n_segments": "12"}


def test_endpoint_specs():
    name, _ = parse_endpoint("som13b=http://gpu:8000/v1", None)
    assert name == "som13b"
    with pytest.raises(Exception, match="NAME=URL"):
        parse_endpoint("http://gpu:8000/v1", None)
