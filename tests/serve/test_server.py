"""`som serve`: the real server (uvicorn on 127.0.0.1, a free port) with a tiny random LLaVA,
asked with httpx and with the official openai client, unchanged.

One `som serve` process (started as a user starts it, API key from $SOMFLOW_API_KEY) serves
the protocol tests; servers with other settings (limits, --tags auto) run the same app
in-process on the same engine code.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from som.chat_api import ChatConnectionError, image_content, text_content
from som.eval.models import Question, load_model
from som.eval.tagging import TagConfig
from som.serve.app import ServeSettings, create_app
from som.serve.endpoint import read_endpoint
from som.serve.engine import LocalEngine, local_engine, remote_engine
from som.serve.errors import RequestError
from som.serve.messages import ImageLimits
from som.serve.server import Server
from tests.helpers.data import DATA_DIR, data_path
from tests.helpers.tiny_llava import build_tiny_llava

KEY = "test-key-123"
START_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def served(folder: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`som serve FOLDER --port 0 --run-dir RUN` in its own process; yields its endpoint.json
    plus "run_dir" and "process"."""
    run_dir = tmp_path_factory.mktemp("serve_run")
    env = {**os.environ, "SOMFLOW_API_KEY": KEY}
    command = [
        sys.executable,
        "-m",
        "som.cli",
        "serve",
        folder,
        "--port",
        "0",
        "--run-dir",
        str(run_dir),
        "--local-files-only",
        "--max-images",
        "2",
        "--max-tokens",
        "64",
    ]
    log_file = (run_dir / "server.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (run_dir / "endpoint.json").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"som serve did not start:\n{(run_dir / 'server.log').read_text()}")
            time.sleep(0.2)
        yield {**read_endpoint(run_dir), "run_dir": str(run_dir), "process": process}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_file.close()
    assert not (run_dir / "endpoint.json").exists(), "a stopped server must remove its endpoint"


@pytest.fixture(scope="module")
def engine(folder: str) -> LocalEngine:
    return local_engine(folder, local_files_only=True)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return data_path("extreme_ironing.jpg").read_bytes()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def ask(photo: bytes, text: str = "What is the man doing?") -> list[dict]:
    return [{"role": "user", "content": [image_content(photo), text_content(text)]}]


def post(served: dict, body: dict | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    url = f"{served['url']}/chat/completions"
    headers = auth() if headers is None else headers
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers={**headers, "Content-Type": "application/json"}, timeout=60)
    return httpx.post(url, json=body, headers=headers, timeout=60)


def assert_error(response: httpx.Response, status: int, code: str | None = None, says: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert says.lower() in error["message"].lower()
    if code is not None:
        assert error["code"] == code


# ----------------------------------------------------------------------------- protocol


def test_endpoint_file_and_health(served: dict, folder: str) -> None:
    assert served["model"] == folder and served["url"].endswith("/v1") and served["api_key_required"] is True
    assert served["host"] == "127.0.0.1" and served["job_id"] is None
    health = httpx.get(served["health"], timeout=10)  # open: load balancers and `som serve` probes
    assert health.status_code == 200 and health.json()["model"] == folder
    models = httpx.get(f"{served['url']}/models", headers=auth(), timeout=10).json()
    assert [m["id"] for m in models["data"]] == [folder]


def test_listens_only_on_loopback(served: dict) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(served["process"].pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    assert {addr.port for addr in listening} == {served["port"]}


def test_chat_completion_with_an_image(served: dict, engine: LocalEngine, photo: bytes) -> None:
    response = post(served, {"model": served["model"], "messages": ask(photo), "max_tokens": 12})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == served["model"]
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["content"] == engine.complete(ask(photo), max_tokens=12)
    usage = body["usage"]
    assert usage["prompt_tokens"] > 100 and 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "som" not in body  # no --tags


def test_streaming_is_openai_sse(served: dict, photo: bytes) -> None:
    body = {"model": served["model"], "messages": ask(photo), "max_tokens": 16}
    whole = post(served, body).json()["choices"][0]["message"]["content"]
    events = []
    with httpx.stream(
        "POST", f"{served['url']}/chat/completions", json={**body, "stream": True}, headers=auth(), timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == served["model"] for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole


def test_openai_client_unchanged(served: dict, photo: bytes) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=served["url"], api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == [served["model"]]
    completion = client.chat.completions.create(model=served["model"], messages=ask(photo), max_tokens=10)
    answer = completion.choices[0].message.content
    assert isinstance(answer, str) and completion.usage.completion_tokens <= 10
    stream = client.chat.completions.create(
        model=served["model"], messages=ask(photo), max_tokens=10, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        else:
            usage = chunk.usage
    assert "".join(pieces) == answer
    assert usage is not None and usage.completion_tokens == completion.usage.completion_tokens


def test_remote_engine_equals_local_engine(served: dict, engine: LocalEngine, photo: bytes) -> None:
    remote = remote_engine(served["url"], api_key=KEY)
    assert remote.name == served["model"]
    expected = engine.complete(ask(photo), max_tokens=8)
    assert remote.complete(ask(photo), max_tokens=8) == expected
    assert "".join(remote.stream(ask(photo), max_tokens=8)) == expected
    with pytest.raises(RequestError, match="invalid API key") as caught:
        remote_engine(served["url"], api_key="wrong")
    assert caught.value.status == 401
    with pytest.raises(RequestError, match="truncated"):
        list(remote.stream(ask(data_path("som_logo.png").read_bytes()), max_tokens=8))
    with pytest.raises(ChatConnectionError, match="cannot reach"):
        remote_engine("http://127.0.0.1:9/v1")


def test_served_answers_equal_in_process_answers(
    served: dict, folder: str, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`som eval`'s two ways to ask the same model: in process, and through `som serve`."""
    monkeypatch.setenv("SOMFLOW_API_KEY", KEY)
    questions = [
        Question(photo, "What is the man doing?", "q1"),
        Question(data_path("waterview.jpg").read_bytes(), "Describe the view.", "q2"),
        Question(None, "Say hello.", "t1"),
        Question(photo, "How many cars are there?", "q3"),
    ]
    local = load_model(folder, max_new_tokens=12, local_files_only=True, batch_size=4)
    remote = load_model(f"served:{served['run_dir']}", max_new_tokens=12, batch_size=4, local_files_only=True)
    assert remote.answer(questions) == local.answer(questions)


# ----------------------------------------------------------------------------- bad input


def test_corrupt_image_is_400(served: dict) -> None:
    truncated = data_path("som_logo.png").read_bytes()
    assert_error(post(served, {"messages": ask(truncated)}), 400, "invalid_image", "truncated")
    not_an_image = base64.b64encode(b"hello, I am text").decode()
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{not_an_image}"}}
    assert_error(
        post(served, {"messages": [{"role": "user", "content": [part]}]}),
        400,
        "invalid_image",
        "not a recognised image",
    )


def test_any_format_the_safe_loader_reads(served: dict, engine: LocalEngine) -> None:
    """A BMP upload (no JPEG/PNG sniffing on the way) is answered, and as the same pixels."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(data_path("extreme_ironing.jpg")).save(buffer, format="BMP")
    messages = [{"role": "user", "content": [image_content(buffer.getvalue(), "image/bmp"), text_content("Hi.")]}]
    response = post(served, {"messages": messages, "max_tokens": 6})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == engine.complete(messages, max_tokens=6)


def test_unknown_model_is_404(served: dict, photo: bytes) -> None:
    assert_error(post(served, {"model": "gpt-9", "messages": ask(photo)}), 404, "model_not_found", "gpt-9")


def test_too_many_images_is_400(served: dict, photo: bytes) -> None:
    content = [image_content(photo)] * 3 + [text_content("Compare.")]
    assert_error(
        post(served, {"messages": [{"role": "user", "content": content}]}), 400, "too_many_images", "at most 2"
    )


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        ({"model": "x"}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "lots"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "expected a text part"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "last message"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65}, "limit of 64"),
    ],
)
def test_malformed_body_is_400(served: dict, body: dict | bytes, says: str) -> None:
    assert_error(post(served, body), 400, says=says)


def test_bearer_token_is_required(served: dict, photo: bytes) -> None:
    body = {"messages": ask(photo)}
    assert_error(post(served, body, headers={}), 401, "missing_api_key")
    assert_error(post(served, body, headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
    assert_error(post(served, body, headers={"Authorization": KEY}), 401, "missing_api_key")
    assert httpx.get(f"{served['url']}/models", timeout=10).status_code == 401


def test_unknown_route_is_openai_shaped(served: dict) -> None:
    assert_error(httpx.get(f"{served['url']}/completions", headers=auth(), timeout=10), 404)


# ----------------------------------------------------------------------------- limits, URLs, tags


def test_concurrency_limit_answers_429(engine: LocalEngine, photo: bytes) -> None:
    """One request generating (here: waiting for the model, which the test holds), the next
    one over --max-concurrency 1 gets 429 with Retry-After, and is served once it is free."""
    with Server(create_app(engine, ServeSettings(max_concurrency=1))) as server:
        url = f"{server.url}/v1/chat/completions"
        first: dict = {}
        with engine._lock:  # the model is busy: the first request waits in the server
            thread = threading.Thread(
                target=lambda: first.update(
                    r=httpx.post(url, json={"messages": ask(photo), "max_tokens": 3}, timeout=60)
                )
            )
            thread.start()
            deadline = time.monotonic() + 30
            while httpx.get(f"{server.url}/health", timeout=5).json()["active_requests"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            busy = httpx.post(url, json={"messages": ask(photo), "max_tokens": 3}, timeout=60)
            assert_error(busy, 429, "server_busy")
            assert busy.headers["retry-after"] == "1"
        thread.join(timeout=60)
        assert first["r"].status_code == 200
        assert httpx.post(url, json={"messages": ask(photo), "max_tokens": 3}, timeout=60).status_code == 200


def test_a_client_leaving_a_stream_frees_the_server(engine: LocalEngine) -> None:
    with Server(create_app(engine, ServeSettings(max_concurrency=1))) as server:
        body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 150, "stream": True}
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
            assert next(response.iter_lines()).startswith("data: ")
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/health", timeout=5).json()["active_requests"]:
            assert time.monotonic() < deadline, "the stream's slot was never released"
            time.sleep(0.05)
        short = httpx.post(
            f"{server.url}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2}, timeout=60
        )
        assert short.status_code == 200


def test_body_and_image_limits(engine: LocalEngine, photo: bytes) -> None:
    settings = ServeSettings(max_body_bytes=200_000, images=ImageLimits(max_bytes=70_000, max_pixels=200_000))
    with Server(create_app(engine, settings)) as server:
        url = f"{server.url}/v1/chat/completions"
        big = data_path("waterview.jpg").read_bytes()  # 95 kB, 1000x667 pixels
        assert_error(httpx.post(url, json={"messages": ask(big + big + big)}, timeout=60), 413, "request_too_large")
        assert_error(httpx.post(url, json={"messages": ask(big)}, timeout=60), 400, "image_too_large")
        assert_error(
            httpx.post(url, json={"messages": ask(photo)}, timeout=60),
            400,
            "invalid_image",
            "exceeds the limit of 200000",
        )


@pytest.fixture(scope="module")
def image_site() -> Iterator[str]:
    """tests/data over HTTP on 127.0.0.1 (a real web server, for image URLs)."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(DATA_DIR))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


def test_image_urls_are_fetched_with_limits(engine: LocalEngine, photo: bytes, image_site: str) -> None:
    def by_url(url: str) -> list[dict]:
        return [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, text_content("What is the man doing?")],
            }
        ]

    with Server(create_app(engine, ServeSettings(images=ImageLimits(max_bytes=70_000)))) as server:
        url = f"{server.url}/v1/chat/completions"
        answer = httpx.post(
            url, json={"messages": by_url(f"{image_site}/extreme_ironing.jpg"), "max_tokens": 8}, timeout=60
        ).json()["choices"][0]["message"]["content"]
        assert answer == engine.complete(ask(photo), max_tokens=8)
        assert_error(
            httpx.post(url, json={"messages": by_url(f"{image_site}/waterview.jpg")}, timeout=60),
            400,
            "image_too_large",
        )
        assert_error(
            httpx.post(url, json={"messages": by_url(f"{image_site}/missing.jpg")}, timeout=60),
            400,
            "image_fetch_failed",
            "HTTP 404",
        )
    with Server(create_app(engine, ServeSettings(images=ImageLimits(allow_urls=False)))) as server:
        refused = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": by_url(f"{image_site}/extreme_ironing.jpg")},
            timeout=60,
        )
        assert_error(refused, 400, says="not fetched by this server")


def test_tags_auto_marks_images_and_returns_the_marks(engine: LocalEngine, photo: bytes) -> None:
    """--tags auto: the model answers about the marked image, and the response maps each tag
    to its pixels (bbox, RLE mask)."""
    from som.mark import rle
    from som.serve.marking import mark_image

    config = TagConfig(segmenter="slic", params={"n_segments": 12})
    marked = mark_image(photo, config)
    with Server(create_app(engine, ServeSettings(tags=config))) as server:
        body = httpx.post(
            f"{server.url}/v1/chat/completions", json={"messages": ask(photo), "max_tokens": 8}, timeout=120
        ).json()
        [image] = body["som"]["images"]
        assert image["marks"] and image["marks"] == marked.marks
        assert (image["width"], image["height"]) == (marked.width, marked.height)
        first = image["marks"][0]
        assert set(first) >= {"tag", "bbox", "area", "rle"}
        assert rle.decode(first["rle"]).shape == (marked.height, marked.width)
        expected = engine.complete(ask(marked.image), max_tokens=8)
        assert body["choices"][0]["message"]["content"] == expected
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            json={"messages": ask(photo), "max_tokens": 4, "stream": True},
            timeout=120,
        ) as response:
            head = json.loads(next(response.iter_lines())[len("data: ") :])
        assert head["som"]["images"][0]["marks"] == marked.marks
        assert np.asarray(marked.rgb()).shape == (marked.height, marked.width, 3)


def test_stop_command_stops_a_local_server(folder: str, tmp_path: Path) -> None:
    """`som serve stop RUN` for a server started with --run-dir on this machine."""
    from click.testing import CliRunner

    from som.cli import cli

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "som.cli",
            "serve",
            folder,
            "--port",
            "0",
            "--run-dir",
            str(tmp_path),
            "--local-files-only",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (tmp_path / "endpoint.json").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        result = CliRunner().invoke(cli, ["serve", "stop", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert "SIGTERM" in result.output
        process.wait(timeout=30)  # uvicorn shuts down, then ends by the signal it caught
        assert not (tmp_path / "endpoint.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
