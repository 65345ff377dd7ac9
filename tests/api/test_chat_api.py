"""som.chat_api against a local chat-completions server: retries, errors, concurrency, cache."""

from __future__ import annotations

import base64
import logging
import socket
import time

import pytest

from som.chat_api import (
    ChatClient,
    ChatConnectionError,
    ChatHTTPError,
    ChatRequest,
    image_content,
    parse_retry_after,
    request_key,
)
from tests.helpers.chat_server import ChatServer, Reply

SECRET = "sk-test-very-secret-0123456789"
HELLO = [{"role": "user", "content": "hello"}]


def client_for(server: ChatServer, **kwargs) -> ChatClient:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("max_backoff", 0.5)
    return ChatClient(server.url, "test-model", kwargs.pop("api_key", SECRET), **kwargs)


def test_request_body_and_answer(chat_server: ChatServer) -> None:
    chat_server.script = [Reply("hi there")]
    with client_for(chat_server) as client:
        assert client.complete(HELLO, max_tokens=7, extra={"top_p": 0.5}) == "hi there"
    (request,) = chat_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.body == {"model": "test-model", "messages": HELLO, "temperature": 0.0, "max_tokens": 7, "top_p": 0.5}


def test_429_waits_for_retry_after(chat_server: ChatServer) -> None:
    chat_server.script = [
        Reply(status=429, headers={"Retry-After": "0.4"}, body={"error": {"message": "slow down"}}),
        Reply("done"),
    ]
    with client_for(chat_server, max_backoff=5) as client:
        assert client.complete(HELLO) == "done"
        assert client.stats.retries == 1
    first, second = chat_server.requests
    assert 0.4 <= second.time - first.time < 2.0


def test_retry_after_is_capped(chat_server: ChatServer) -> None:
    chat_server.script = [Reply(status=429, headers={"Retry-After": "3600"}), Reply("done")]
    start = time.monotonic()
    with client_for(chat_server, max_backoff=0.2) as client:
        assert client.complete(HELLO) == "done"
    assert time.monotonic() - start < 2.0


def test_500_twice_then_success(chat_server: ChatServer) -> None:
    chat_server.script = [Reply(status=500), Reply(status=503), Reply("finally")]
    with client_for(chat_server) as client:
        assert client.complete(HELLO) == "finally"
    assert len(chat_server.requests) == 3


def test_5xx_until_retries_run_out(chat_server: ChatServer) -> None:
    chat_server.script = [Reply(status=502, body={"error": {"message": "bad gateway"}})]
    with client_for(chat_server, max_retries=2) as client, pytest.raises(ChatHTTPError) as info:
        client.complete(HELLO)
    assert len(chat_server.requests) == 3
    assert info.value.status == 502 and info.value.attempts == 3
    assert "bad gateway" in str(info.value)


def test_400_raises_without_retry(chat_server: ChatServer) -> None:
    chat_server.script = [Reply(status=400, body={"error": {"message": "image too large", "type": "invalid"}})]
    with client_for(chat_server) as client, pytest.raises(ChatHTTPError) as info:
        client.complete(HELLO)
    assert len(chat_server.requests) == 1
    assert info.value.status == 400
    assert "HTTP 400" in str(info.value) and "image too large" in str(info.value)


def test_connection_refused_is_retried_then_raised() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff_base=0.01)
    with client, pytest.raises(ChatConnectionError, match="3 attempts"):
        client.complete(HELLO)
    assert client.stats.requests == 3


def test_concurrency_limit(chat_server: ChatServer) -> None:
    chat_server.script = lambda body, index: Reply(body["messages"][0]["content"], delay=0.15)
    requests = [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(8)]
    with client_for(chat_server, max_concurrency=3) as client:
        answers = client.complete_many(requests)
    assert answers == [f"q{i}" for i in range(8)]
    assert chat_server.max_in_flight == 3


def test_complete_many_return_exceptions(chat_server: ChatServer) -> None:
    chat_server.script = lambda body, index: (
        Reply(status=400) if body["messages"][0]["content"] == "bad" else Reply("fine")
    )
    requests = [{"messages": [{"role": "user", "content": c}]} for c in ("a", "bad", "b")]
    with client_for(chat_server) as client:
        results = client.complete_many(requests, return_exceptions=True)
        with pytest.raises(ChatHTTPError):
            client.complete_many(requests)
    assert results[0] == results[2] == "fine"
    assert isinstance(results[1], ChatHTTPError)


@pytest.mark.parametrize("where", ["folder", "memory"])
def test_cache_hit_makes_no_request(chat_server: ChatServer, tmp_path, where: str) -> None:
    cache_url = str(tmp_path / "cache") if where == "folder" else f"memory://chat-cache/{tmp_path.name}"
    chat_server.script = [Reply("first")]
    with client_for(chat_server, cache_url=cache_url) as client:
        assert client.complete(HELLO) == "first"
    chat_server.script = [Reply("second")]
    with client_for(chat_server, cache_url=cache_url) as client:  # a new client: a rerun
        assert client.complete(HELLO) == "first"
        assert client.stats.cache_hits == 1
        assert client.complete(HELLO, temperature=0.5) == "second"  # another request
    assert len(chat_server.requests) == 2


def test_explicit_cache_key(chat_server: ChatServer, tmp_path) -> None:
    chat_server.script = [Reply("keyed")]
    with client_for(chat_server, cache_url=str(tmp_path)) as client:
        assert client.complete(HELLO, cache_key="item-1") == "keyed"
        assert client.complete([{"role": "user", "content": "other"}], cache_key="item-1") == "keyed"
    assert len(chat_server.requests) == 1


def test_request_key_covers_every_field() -> None:
    base = request_key("m", HELLO, 0.0, 10, {"top_p": 1})
    assert base == request_key("m", [dict(HELLO[0])], 0.0, 10, {"top_p": 1})
    assert (
        len(
            {
                base,
                request_key("m2", HELLO, 0.0, 10, {"top_p": 1}),
                request_key("m", HELLO, 0.1, 10, {"top_p": 1}),
                request_key("m", HELLO, 0.0, 11, {"top_p": 1}),
                request_key("m", HELLO, 0.0, 10, None),
            }
        )
        == 5
    )


def test_api_key_stays_out_of_repr_and_logs(chat_server: ChatServer, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    chat_server.script = [Reply(status=500), Reply(status=401, body={"error": {"message": "bad key"}})]
    client = client_for(chat_server)
    with client, pytest.raises(ChatHTTPError) as info:
        client.complete(HELLO)
    for text in (repr(client), str(client), str(info.value), caplog.text):
        assert SECRET not in text
    assert "api_key='***'" in repr(client)
    assert "retry 1/" in caplog.text  # the retry was logged, without the key


def test_settings_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("SOMFLOW_CHAT_BASE_URL", "http://example.invalid/v1/")
    monkeypatch.setenv("SOMFLOW_CHAT_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with ChatClient() as client:
        assert client.endpoint == "http://example.invalid/v1/chat/completions"
        assert client.model == "env-model"
        assert client._headers()["Authorization"] == f"Bearer {SECRET}"
        assert SECRET not in repr(client)
    monkeypatch.delenv("SOMFLOW_CHAT_MODEL")
    with pytest.raises(ValueError, match="SOMFLOW_CHAT_MODEL"):
        ChatClient()


def test_extra_cannot_override_the_request(chat_server: ChatServer) -> None:
    with client_for(chat_server) as client, pytest.raises(ValueError, match="model"):
        client.complete(HELLO, extra={"model": "other"})
    assert not chat_server.requests


def test_image_content(marked_image: bytes) -> None:
    part = image_content(marked_image)
    assert part["type"] == "image_url"
    prefix = "data:image/jpeg;base64,"
    assert part["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(part["image_url"]["url"][len(prefix) :]) == marked_image
    assert image_content(b"\x89PNG\r\n\x1a\nrest", detail="low")["image_url"] == {
        "url": "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode(),
        "detail": "low",
    }
    with pytest.raises(ValueError):
        image_content(b"not an image")


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
