"""`som chat` in a real terminal (tmux) with the tiny random LLaVA loaded in-process, and the
conversation it keeps (som.serve.chat).

The terminal tests type into a tmux pane with send-keys and read the screen with
capture-pane, as a person would see it.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from som.data.llava import record_problems
from som.eval.tagging import TagConfig
from som.serve.chat import ChatImage, Conversation
from tests.helpers.data import data_path
from tests.helpers.tiny_llava import build_tiny_llava

SOM = str(Path(sys.executable).with_name("som"))
PROMPT = "you ›"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "model")


class Terminal:
    """A 200x60 tmux pane on its own tmux server (so tests never touch a person's sessions)."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.socket = f"somchat-{uuid.uuid4().hex[:8]}"
        shell = " ".join(_quote(part) for part in command)
        self._tmux(
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "60",
            "-c",
            str(cwd),
            "-s",
            "chat",
            f"{shell}; echo CHAT-EXIT=$?; sleep 600",
        )

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def type(self, line: str) -> None:
        self._tmux("send-keys", "-t", "chat", "-l", line)
        self._tmux("send-keys", "-t", "chat", "Enter")

    def screen(self, escapes: bool = False) -> str:
        """Everything printed so far (scrollback included), wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-3000", "-t", "chat", *(["-e"] if escapes else []))

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> str:
        """The screen once `text` appears `count` times; fails with the screen on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            if time.monotonic() > deadline or "CHAT-EXIT=" in screen:
                pytest.fail(f"waited for {count} x {text!r}; the terminal shows:\n{screen[-4000:]}")
            time.sleep(0.3)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30, check=False)


def _quote(part: str) -> str:
    return part if re.fullmatch(r"[\w./=:,@-]+", part) else "'" + part.replace("'", "'\\''") + "'"


@pytest.fixture
def terminal(tmp_path: Path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    opened: list[Terminal] = []

    def open_terminal(*args: str) -> Terminal:
        opened.append(Terminal([SOM, "chat", *args], tmp_path))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


def answers_after(screen: str, question: str) -> str:
    """What the terminal printed between `question` and the next prompt."""
    after = screen.split(f"{PROMPT} {question}", 1)[1]
    return after.split(PROMPT, 1)[0]


@pytest.mark.slow
def test_chat_answers_retags_and_saves_llava_json(terminal, tiny_model, tmp_path):
    """A person's session: the tag list, two questions, /tags with a coarser SLIC, one more
    question about the new tags, /save, /quit."""
    out = tmp_path / "marked"
    term = terminal(
        str(data_path("waterview.jpg")),
        "--model",
        tiny_model,
        "--segmenter",
        "slic",
        "--param",
        "n_segments=10",
        "--max-tokens",
        "12",
        "--out",
        str(out),
    )
    screen = term.wait_for(PROMPT)
    [(written, size, count)] = re.findall(r"Marked image: (\S+\.png) \((\d+x\d+), (\d+) tags, slic", screen)
    assert Path(written).parent == out and Image.open(written).size == (959, 640) and size == "959x640"
    rows = re.findall(r"^ (\d+) +(\d+,\d+ \d+x\d+) +(\d+)\s*$", screen, flags=re.MULTILINE)
    assert [row[0] for row in rows] == [str(n) for n in range(1, int(count) + 1)]

    term.type("What is in tag 1?")
    screen = term.wait_for(PROMPT, 2)
    first = answers_after(screen, "What is in tag 1?")
    assert "model ›" in first and first.split("model ›", 1)[1].strip(), "an answer (or '(empty answer)')"
    term.type("And tag 2?")
    term.wait_for(PROMPT, 3)

    term.type("/tags n_segments=5")
    screen = term.wait_for("Marked image:", 2)
    screen = term.wait_for(PROMPT, 4)
    assert "The tags changed: new conversation." in screen
    [second_image] = re.findall(r"Marked image: (\S+\.png)", screen)[1:]
    assert second_image != written

    term.type("Which tag is the sky?")
    term.wait_for(PROMPT, 5)
    saved = tmp_path / "session.json"
    term.type(f"/save {saved}")
    screen = term.wait_for("Saved 1 turn as LLaVA JSON")
    term.type("/quit")
    term.wait_for("CHAT-EXIT=0")

    [record] = json.loads(saved.read_text())
    assert record_problems(record) == []
    assert record["image"] == second_image and Path(record["image"]).is_file()
    human, gpt = record["conversations"]
    assert human == {"from": "human", "value": "<image>\nWhich tag is the sky?"}
    assert gpt["from"] == "gpt" and gpt["value"].strip()


@pytest.mark.slow
def test_image_switch_and_bad_image_keep_the_session(terminal, tiny_model, tmp_path):
    """/image with a truncated file prints the reason and keeps the current image; a good one
    starts over with its own tags; --tags none sends the image unmarked."""
    term = terminal(
        str(data_path("waterview.jpg")),
        "--model",
        tiny_model,
        "--tags",
        "none",
        "--max-tokens",
        "4",
        "--out",
        str(tmp_path / "out"),
    )
    screen = term.wait_for(PROMPT)
    [plain] = re.findall(r"Image \(untagged\): (\S+)", screen)
    assert Path(plain).read_bytes() == data_path("waterview.jpg").read_bytes() and "Tags" not in screen
    term.type(f"/image {data_path('som_logo.png')}")
    screen = term.wait_for(PROMPT, 2)
    assert "som_logo.png: corrupt or truncated image data" in screen
    term.type("/tags segmenter=slic n_segments=6")
    screen = term.wait_for("Marked image:")
    assert "waterview-" in screen.rsplit("Marked image:", 1)[1]
    term.type(f"/image {data_path('extreme_ironing.jpg')}")
    screen = term.wait_for("Marked image:", 2)
    assert "extreme_ironing-" in screen.rsplit("Marked image:", 1)[1]
    term.type("/tags n_segments")
    term.wait_for("expected KEY=VALUE, got 'n_segments'")
    term.type("/tags colour=red")
    term.wait_for("unknown key 'colour'")
    term.type("/nonsense")
    term.wait_for("/save FILE")
    term.type("/quit")
    term.wait_for("CHAT-EXIT=0")


def test_bad_image_fails_before_the_model_loads(tmp_path):
    """The image is checked first: a truncated upload fails in a second, naming the reason,
    before a (possibly 13B) model would load."""
    done = subprocess.run(
        [SOM, "chat", str(data_path("som_logo.png")), "--model", str(tmp_path / "no-model"), "--segmenter", "slic"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot use" in done.stderr and "truncated image data" in done.stderr


def test_needs_a_model_or_an_endpoint():
    done = subprocess.run(
        [SOM, "chat", str(data_path("waterview.jpg"))], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2 and "give --model" in done.stderr


@pytest.mark.slow
def test_conversation_sends_the_marked_image_once_and_the_history(tiny_model):
    """In-process: the first user message carries the marked PNG as a data URL, later ones
    are text, and earlier answers go back as assistant messages."""
    from som.serve.engine import local_engine

    engine = local_engine(tiny_model, device="cpu")
    image = ChatImage.load(
        data_path("waterview.jpg").read_bytes(), "waterview.jpg", TagConfig(segmenter="slic", params={"n_segments": 8})
    )
    conversation = Conversation(image)
    first = "".join(conversation.ask(engine, "What is tag 1?", max_tokens=6))
    second = "".join(conversation.ask(engine, "And tag 2?", max_tokens=6))
    assert conversation.turns == [("What is tag 1?", first), ("And tag 2?", second)]
    messages = conversation.messages("Anything else?")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    picture, text = messages[0]["content"]
    assert text == {"type": "text", "text": "What is tag 1?"}
    header, payload = picture["image_url"]["url"].split(",", 1)
    assert header == "data:image/png;base64" and base64.b64decode(payload) == image.marked.image
    assert messages[1:] == [
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And tag 2?"},
        {"role": "assistant", "content": second},
        {"role": "user", "content": "Anything else?"},
    ]
    # The streamed answer is the engine's whole answer to the same conversation.
    assert engine.complete(conversation.messages("And tag 2?")[:3], max_tokens=6) == second


def test_answer_view_highlights_the_tags_it_mentions():
    from som.serve.chat_cli import TAG_STYLE, AnswerView

    image = ChatImage.load(
        data_path("waterview.jpg").read_bytes(), "waterview.jpg", TagConfig(segmenter="slic", params={"n_segments": 8})
    )
    view = AnswerView(image.marked)
    for piece in ["Tag ", "3 is water; [", "5] is sky, 3.5 m and 99 are not tags."]:
        view.add(piece)
    text = view.render()
    styled = [(span.start, span.end) for span in text.spans if span.style == TAG_STYLE]
    assert [text.plain[start:end] for start, end in styled] == ["3", "5"]
    assert view.mentioned() == ["3", "5"]


@pytest.fixture
def served(tiny_model, tmp_path):
    """`som serve` with the tiny model on a free port; yields its base URL."""
    import httpx

    from tests.helpers.stack import free_port

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [SOM, "serve", tiny_model, "--port", str(port), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"som serve did not come up:\n{(tmp_path / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_chat_through_a_som_serve_endpoint(terminal, served, tmp_path):
    """--url: the same session against a running `som serve` (streamed over HTTP); the saved
    answer is what the server answers to the saved conversation."""
    import httpx

    term = terminal(
        str(data_path("waterview.jpg")),
        "--url",
        served,
        "--segmenter",
        "slic",
        "--param",
        "n_segments=8",
        "--max-tokens",
        "8",
        "--out",
        str(tmp_path / "out"),
    )
    term.wait_for(PROMPT)
    term.type("What is tag 1?")
    term.wait_for(PROMPT, 2)
    saved = tmp_path / "remote.json"
    term.type(f"/save {saved}")
    term.wait_for("Saved 1 turn")
    term.type("/quit")
    term.wait_for("CHAT-EXIT=0")

    [record] = json.loads(saved.read_text())
    image = base64.b64encode(Path(record["image"]).read_bytes()).decode()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                    {"type": "text", "text": "What is tag 1?"},
                ],
            }
        ],
        "max_tokens": 8,
        "temperature": 0,
    }
    models = httpx.get(f"{served}/models", timeout=30).json()["data"]
    reply = httpx.post(f"{served}/chat/completions", json={**body, "model": models[0]["id"]}, timeout=120).json()
    answer = reply["choices"][0]["message"]["content"].strip() or "(no answer)"
    assert record["conversations"][1]["value"] == answer
