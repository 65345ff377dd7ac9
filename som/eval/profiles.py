"""Prompt profiles: how one question becomes a model's input text and image(s).

Why a module of its own: evaluation (`som.eval.models.HFModel`) and serving must show a model
the exact same input, or served answers drift from evaluated scores. A profile renders a
question for a processor (`render`), and `processor_inputs` turns a batch of rendered prompts
into the processor's tensors with exactly one BOS per row and images nested per prompt where
the processor needs that. Nothing here loads weights or imports Prefect.

Profiles:

- ``llava-1.5``: LLaVA-1.5's own evaluation input (``llava/eval/model_vqa_loader.py`` with
  ``--conv-mode vicuna_v1``): ``"{system} USER: <image>\\n{question} ASSISTANT:"`` with the
  system message of `som.train.templates.VICUNA_SYSTEM`, and the image padded to a square with
  the image processor's mean colour before the processor (``image_aspect_ratio pad``,
  ``expand2square``), so CLIP's centre crop cuts nothing off. Picked automatically for
  LLaVA-1.5-architecture models (``LlavaForConditionalGeneration`` with a CLIP vision tower
  and a Llama language model: llava-hf's llava-1.5, SoM-LLaVA converted, somflow's exports).
- ``chat-template``: the processor's own chat template (LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL,
  InternVL, Idefics3, SmolVLM, Mllama, Gemma3, ...).
- ``paligemma``: ``"answer en {question}"``; the processor adds the image tokens, the BOS and
  the closing newline itself (PaliGemma's documented VQA prefix).
- ``fuyu``: ``"{question}\\n"``, as Fuyu's model card prompts; the processor adds the image
  patches' tokens and the BOS.

A model without a chat template and without a known format is an error naming
``--prompt-profile``: no silent fallback to another family's format.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from som.train.templates import IMAGE_TOKEN, get_template

if TYPE_CHECKING:
    from PIL import Image

AUTO = "auto"
PROFILE_OPTION = "--prompt-profile"
INPUT_FORMAT = 2
"""Version of the inputs these profiles build, recorded with every answer: bump it when a
profile changes what a model is shown, so a rerun asks earlier answers again (2: LLaVA-1.5's
system message and square padding, one BOS, images per prompt)."""


class ProfileError(ValueError):
    """A profile that does not fit the model or the question; the message says what to pass."""


@dataclass(frozen=True)
class Question:
    """One question: `image` is encoded JPEG/PNG bytes (None for a text-only question)."""

    image: bytes | None
    prompt: str
    id: str


@dataclass(frozen=True)
class Prompt:
    """A rendered question: the exact text and the images (in order) for one processor row."""

    text: str
    images: tuple[Image.Image, ...] = ()


def decode_image(data: bytes) -> Image.Image:
    """Encoded image bytes as an RGB PIL image (what every processor here expects)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _model_type(config: Any) -> str:
    return str(getattr(config, "model_type", "") or "")


def _sub_type(config: Any, name: str) -> str:
    return _model_type(getattr(config, name, None))


def _image_token(processor: Any) -> str:
    return getattr(processor, "image_token", None) or IMAGE_TOKEN


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


class PromptProfile:
    """How a family is prompted. `bos` says who puts the BOS in front of the text:
    "tokenizer" (the tokenizer, or the chat template when it renders one already), "ensure"
    (exactly one, added by us when the tokenizer does not) or "processor" (the processor's
    own code, e.g. PaliGemma's and Fuyu's)."""

    name: ClassVar[str]
    bos: ClassVar[str] = "tokenizer"
    model_types: ClassVar[frozenset[str] | None] = None
    """The config model types the format is for (None: any model the profile can render for)."""
    takes_text_only: ClassVar[bool] = True

    def check(self, config: Any, processor: Any) -> None:
        """Raise ProfileError when this profile cannot prompt the model."""
        if self.model_types is not None and _model_type(config) not in self.model_types:
            raise ProfileError(
                f"prompt profile {self.name!r} is for {'/'.join(sorted(self.model_types))} models, not "
                f"{_model_type(config) or 'this model'!r}; pass {PROFILE_OPTION} {auto_name(config, processor)}"
            )

    def render(self, processor: Any, text: str, image: Image.Image | None) -> Prompt:
        """The processor row for question `text` and its image (None: text only)."""
        if image is None and not self.takes_text_only:
            raise ProfileError(
                f"prompt profile {self.name!r} needs an image: this model cannot answer a "
                f"text-only question ({text[:60]!r})"
            )
        return self._render(processor, text, image)

    def _render(self, processor: Any, text: str, image: Image.Image | None) -> Prompt:
        raise NotImplementedError

    def render_question(self, processor: Any, question: Question) -> Prompt:
        """`render` for an evaluation question (image bytes decoded here)."""
        image = None if question.image is None else decode_image(question.image)
        try:
            return self.render(processor, question.prompt, image)
        except ProfileError as exc:
            raise ProfileError(f"question {question.id}: {exc}") from None


class Llava15Profile(PromptProfile):
    """LLaVA-1.5's vicuna_v1 prompt with the image padded to a square (see module docstring)."""

    name = "llava-1.5"
    bos = "ensure"  # LLaVA's tokenizer_image_token keeps exactly the first chunk's BOS
    model_types = frozenset({"llava"})

    def _render(self, processor: Any, text: str, image: Image.Image | None) -> Prompt:
        template = get_template("vicuna_v1")
        user, assistant = template.roles
        question = text if image is None else f"{_image_token(processor)}\n{text}"
        rendered = f"{template.system}{template.sep}{user}: {question}{template.sep}{assistant}:"
        if image is None:
            return Prompt(rendered)
        return Prompt(rendered, (self.square_image(processor, image),))

    @staticmethod
    def square_image(processor: Any, image: Image.Image) -> Image.Image:
        """`image` padded to a square with the image processor's mean colour (also used for
        every image of a served multi-turn conversation, som.serve.prompting)."""
        from som.images import expand2square

        mean = processor.image_processor.image_mean
        return expand2square(image, tuple(int(x * 255) for x in mean))


class ChatTemplateProfile(PromptProfile):
    """The processor's chat template: one user turn, the image first, then the question."""

    name = "chat-template"

    def check(self, config: Any, processor: Any) -> None:
        if not getattr(processor, "chat_template", None):
            raise ProfileError(
                f"{_model_type(config) or 'this model'}'s processor has no chat template; pass "
                f"{PROFILE_OPTION} {auto_name(config, processor, allow_template=False)}"
            )

    def _render(self, processor: Any, text: str, image: Image.Image | None) -> Prompt:
        content: list[dict[str, str]] = [{"type": "image"}] if image is not None else []
        content.append({"type": "text", "text": text})
        rendered = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        return Prompt(rendered, () if image is None else (image,))


class PaliGemmaProfile(PromptProfile):
    """PaliGemma's VQA prefix; the processor adds image tokens, BOS and the newline."""

    name = "paligemma"
    bos = "processor"
    model_types = frozenset({"paligemma"})
    takes_text_only = False

    def _render(self, processor: Any, text: str, image: Image.Image | None) -> Prompt:
        assert image is not None  # render() refuses text-only questions
        return Prompt(f"{_image_token(processor)}answer en {text}", (image,))


class FuyuProfile(PromptProfile):
    """Fuyu's prompt: the question and a newline; the processor adds the image and BOS."""

    name = "fuyu"
    bos = "processor"
    model_types = frozenset({"fuyu"})
    takes_text_only = False

    def _render(self, processor: Any, text: str, image: Image.Image | None) -> Prompt:
        assert image is not None
        return Prompt(f"{text}\n", (image,))


PROFILES: dict[str, PromptProfile] = {
    profile.name: profile for profile in (Llava15Profile(), ChatTemplateProfile(), PaliGemmaProfile(), FuyuProfile())
}


def is_llava15(config: Any) -> bool:
    """LLaVA-1.5's architecture: a Llava config with a CLIP vision tower and a Llama LM (not
    Pixtral, LLaVA-Interleave and other "llava" configs with another tower or LM)."""
    return (
        _model_type(config) == "llava"
        and _sub_type(config, "vision_config") == "clip_vision_model"
        and _sub_type(config, "text_config") in ("llama", "")
    )


def auto_name(config: Any, processor: Any, *, allow_template: bool = True) -> str:
    """The profile "auto" picks for a model; raises ProfileError when there is none."""
    model_type = _model_type(config)
    if is_llava15(config):
        return Llava15Profile.name
    for profile in (PaliGemmaProfile, FuyuProfile):
        if profile.model_types and model_type in profile.model_types:
            return profile.name
    if allow_template and getattr(processor, "chat_template", None):
        return ChatTemplateProfile.name
    raise ProfileError(
        f"no known prompt format for {model_type or 'this model'!r} and its processor has no "
        f"chat template; pass {PROFILE_OPTION} (one of {', '.join(PROFILES)})"
    )


def resolve_profile(name: str | None, config: Any, processor: Any) -> PromptProfile:
    """The profile called `name` (None or "auto": chosen from the model), checked to fit."""
    if name is None or name == AUTO:
        name = auto_name(config, processor)
    if name not in PROFILES:
        raise ProfileError(f"unknown prompt profile {name!r}; choose {AUTO} or one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    profile.check(config, processor)
    return profile


# ----------------------------------------------------------------------------- processor inputs


NESTED_IMAGE_PROCESSORS = frozenset({"MllamaProcessor", "Gemma3Processor", "SmolVLMProcessor"})
"""Processors that read a flat image list as all images of one prompt, so a batch of
one-image prompts must be passed as one list per prompt (``[[img], [img], ...]``); the other
families' processors take a flat list, one image per image token in order."""


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether plain tokenization (special tokens on) starts with the BOS token."""
    if tokenizer.bos_token_id is None:
        return False
    return tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]


def processor_inputs(processor: Any, profile: PromptProfile, prompts: Sequence[Prompt], **kwargs: Any) -> Any:
    """The processor's batch (left padded, PyTorch tensors) for `prompts` rendered by `profile`.

    Exactly one BOS per row: a text that already starts with the BOS (Gemma3's and Mllama's
    templates render it) is tokenized without special tokens; the llava-1.5 profile gets the
    BOS prepended when the tokenizer does not add one itself (LLaVA always has it); the other
    profiles keep the tokenizer's or the processor's own behaviour. `kwargs` go to the processor."""
    if not prompts:
        raise ValueError("no prompts")
    counts = {len(p.images) for p in prompts}
    if len(counts) > 1 and 0 in counts:
        raise ValueError("a batch mixes text-only and image prompts; the processor takes all or none")
    texts = [p.text for p in prompts]
    tokenizer = _tokenizer(processor)
    tokenizer.padding_side = "left"  # every row's new tokens start at the same position
    bos = tokenizer.bos_token
    call: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True, **kwargs}
    if profile.bos != "processor" and bos:
        if all(t.startswith(bos) for t in texts):
            call["add_special_tokens"] = False
        elif profile.bos == "ensure" and not tokenizer_adds_bos(tokenizer):
            call["text"] = [bos + t for t in texts]
            call["add_special_tokens"] = False
    if 0 not in counts:
        if type(processor).__name__ in NESTED_IMAGE_PROCESSORS:
            call["images"] = [list(p.images) for p in prompts]
        else:
            call["images"] = [image for p in prompts for image in p.images]
    return processor(**call)
