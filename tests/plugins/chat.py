"""pytest plugin: ``chat_server``, a local OpenAI-compatible server (tests/helpers/chat_server.py)
that a test scripts replies on and whose received requests it inspects."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.chat_server import ChatServer


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer().start()
    try:
        yield server
    finally:
        server.stop()
