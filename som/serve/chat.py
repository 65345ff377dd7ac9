"""One multi-turn conversation about one image, shared by `som chat` and `som demo`.

A SoM model answers about the tags drawn on its input, so the image is marked here, on the
client side, and the person sees the very image and tag list the model got. The conversation
is sent in full on every turn as OpenAI chat messages (the image as a data URL in the first
user message, as LLaVA puts `<image>` in its first human turn) to any `Engine`: a model in
this process or an OpenAI-compatible endpoint. It saves as a LLaVA record (som.data.
conversations), so a good session can become training or evaluation data.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.serve.marking import MarkedImage, mark_image

if TYPE_CHECKING:
    from som.eval.tagging import TagConfig
    from som.serve.engine import Engine


@dataclass(frozen=True)
class ChatImage:
    """The image a conversation is about, as the model gets it.

    data, mime: the bytes sent (the marked PNG when tagged, else the upload as it was).
    source: where the upload came from (a path or a name), for messages and records.
    marked: the marks when tagged, else None.
    """

    data: bytes
    mime: str
    source: str
    marked: MarkedImage | None = None

    @classmethod
    def load(cls, data: bytes, source: str, tags: TagConfig | None) -> ChatImage:
        """Check (and with `tags`, mark) an upload. Raises som.images.ImageLoadError with the
        reason for corrupt, oversized or extreme-aspect images, whether or not it is tagged."""
        from PIL import Image

        from som.images import decode_image

        if tags is not None:
            marked = mark_image(data, tags, source=source)
            return cls(marked.image, "image/png", source, marked)
        decode_image(data, source)  # the same refusals as marking, before a model sees it
        mime = Image.open(io.BytesIO(data)).get_format_mimetype() or "application/octet-stream"
        return cls(data, mime, source)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def write(self, folder: Path) -> Path:
        """Save the image the model sees as `<stem>-<sha256 prefix>.<ext>` under `folder`."""
        extension = mimetypes.guess_extension(self.mime) or ".img"
        path = Path(folder) / f"{Path(self.source).stem}-{self.sha256[:12]}{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data)
        return path


@dataclass
class Conversation:
    """Turns of questions and answers about `image`; `record_image` names it in saved records."""

    image: ChatImage
    record_image: str = ""
    turns: list[tuple[str, str]] = field(default_factory=list)

    def messages(self, question: str) -> list[dict[str, Any]]:
        """OpenAI chat messages for the whole conversation plus `question`."""
        messages: list[dict[str, Any]] = []
        for number, (asked, answered) in enumerate([*self.turns, (question, None)]):
            if number == 0:
                content: Any = [
                    {"type": "image_url", "image_url": {"url": self.image.data_url()}},
                    {"type": "text", "text": asked},
                ]
            else:
                content = asked
            messages.append({"role": "user", "content": content})
            if answered is not None:
                messages.append({"role": "assistant", "content": answered})
        return messages

    def ask(self, engine: Engine, question: str, *, max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        """Stream the answer to `question`; the turn is kept once the stream is finished (a
        stream broken off by an error or the person leaves no half answer in the history)."""
        question = question.strip()
        if not question:
            raise ValueError("empty question")
        pieces = []
        for piece in engine.stream(self.messages(question), max_tokens=max_tokens, temperature=temperature):
            pieces.append(piece)
            yield piece
        self.turns.append((question, "".join(pieces)))

    def record(self, record_id: str | None = None) -> dict[str, Any]:
        """This conversation as a LLaVA record; empty answers are written as "(no answer)"
        because LLaVA records must not hold empty turns."""
        from som.data.llava import llava_record

        turns = [(question, answer.strip() or "(no answer)") for question, answer in self.turns]
        return llava_record(
            record_id or f"chat-{self.image.sha256[:12]}", self.record_image or self.image.source, turns
        )

    def save(self, path: Path) -> Path:
        """Write the conversation as a LLaVA JSON file (a list of one record, the format of
        the training data) and return the path."""
        if not self.turns:
            raise ValueError("nothing to save yet: ask a question first")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([self.record()], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def tag_rows(marked: MarkedImage | None) -> list[tuple[str, str, int]]:
    """(tag, "x,y wxh" box, area) per tag, for the tag tables of the chat and the demo."""
    if marked is None:
        return []
    return [(m["tag"], "{},{} {}x{}".format(*m["bbox"]), m["area"]) for m in marked.marks]
