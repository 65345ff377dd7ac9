"""Prompt profiles (som.eval.profiles): LLaVA-1.5's exact evaluation prompt and pad-to-square
image, one BOS, automatic choice per architecture and the errors that name --prompt-profile.
Every family end to end is in test_families.py."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from tokenizers.processors import TemplateProcessing

from som.eval.profiles import (
    PROFILES,
    Llava15Profile,
    ProfileError,
    Question,
    auto_name,
    processor_inputs,
    resolve_profile,
    tokenizer_adds_bos,
)
from som.images import expand2square
from som.train.templates import VICUNA_SYSTEM
from tests.helpers.tiny_llava import build_tiny_llava

LLAVA_15 = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: <image>\n{question} ASSISTANT:"
)


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def config(model_type: str, vision: str = "", text: str = "") -> SimpleNamespace:
    return SimpleNamespace(
        model_type=model_type,
        vision_config=SimpleNamespace(model_type=vision),
        text_config=SimpleNamespace(model_type=text),
    )


@pytest.fixture(scope="module")
def llava_processor(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(build_tiny_llava(tmp_path_factory.mktemp("tiny_llava")), local_files_only=True)


def test_llava15_prompt_is_llava_model_vqa_loader_text(llava_processor) -> None:
    profile = PROFILES["llava-1.5"]
    question = "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    prompt = profile.render_question(llava_processor, Question(png(40, 20), question, "q"))
    assert prompt.text == LLAVA_15.format(question=question)
    assert prompt.text.startswith(VICUNA_SYSTEM + " USER: ")
    text_only = profile.render_question(llava_processor, Question(None, "Say hi.", "t"))
    assert text_only.text == LLAVA_15.format(question="Say hi.").replace("<image>\n", "")
    assert text_only.images == ()


def test_expand2square_centres_on_the_mean_colour() -> None:
    wide = Image.new("RGB", (5, 2), (255, 255, 255))
    square = expand2square(wide, (1, 2, 3))
    assert square.size == (5, 5)
    assert [square.getpixel((0, y)) for y in range(5)] == [(1, 2, 3)] + [(255, 255, 255)] * 2 + [(1, 2, 3)] * 2
    tall = expand2square(Image.new("RGB", (2, 5), (255, 255, 255)), (9, 9, 9))
    assert [tall.getpixel((x, 0)) for x in range(5)] == [(9, 9, 9)] + [(255, 255, 255)] * 2 + [(9, 9, 9)] * 2
    assert expand2square(wide.resize((3, 3)), (0, 0, 0)).size == (3, 3)


def test_llava15_pads_to_square_before_the_processor(llava_processor) -> None:
    """Pixel values are the processor's on expand2square(image, mean colour), not its centre crop."""
    profile = PROFILES["llava-1.5"]
    data = png(64, 16)
    prompt = profile.render_question(llava_processor, Question(data, "What is it?", "q"))
    [image] = prompt.images
    mean = tuple(int(x * 255) for x in llava_processor.image_processor.image_mean)
    original = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (64, 64) and image.getpixel((0, 0)) == mean and image.getpixel((0, 24)) == (200, 30, 60)
    expected = llava_processor.image_processor(expand2square(original, mean), return_tensors="pt")["pixel_values"]
    encoded = processor_inputs(llava_processor, profile, [prompt])
    assert torch.equal(encoded["pixel_values"], expected)
    cropped = llava_processor.image_processor(original, return_tensors="pt")["pixel_values"]
    assert not torch.equal(encoded["pixel_values"], cropped)


def test_llava15_gets_exactly_one_bos(llava_processor) -> None:
    """LLaVA's tokenizer_image_token keeps one BOS; the tiny tokenizer adds none, so it is prepended,
    and a tokenizer that adds one itself is left to do it (never two)."""
    profile = PROFILES["llava-1.5"]
    tokenizer = llava_processor.tokenizer
    prompts = [
        profile.render_question(llava_processor, Question(png(30, 20), q, str(i)))
        for i, q in enumerate(["Hi?", "A much longer question about the picture?"])
    ]
    encoded = processor_inputs(llava_processor, profile, prompts)
    for ids, mask in zip(encoded["input_ids"].tolist(), encoded["attention_mask"].tolist(), strict=True):
        row = [i for i, m in zip(ids, mask, strict=True) if m]
        assert row[0] == tokenizer.bos_token_id and row.count(tokenizer.bos_token_id) == 1
    assert encoded["attention_mask"][0, 0] == 0  # left padding
    backend = tokenizer.backend_tokenizer
    original = backend.post_processor
    backend.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)])
    try:  # a Llama-like tokenizer that adds the BOS itself
        assert tokenizer_adds_bos(tokenizer)
        again = processor_inputs(llava_processor, profile, prompts)
        assert torch.equal(again["input_ids"], encoded["input_ids"])
    finally:
        backend.post_processor = original


def test_auto_profile_by_architecture(llava_processor) -> None:
    llava = config("llava", "clip_vision_model", "llama")
    assert auto_name(llava, llava_processor) == "llava-1.5"
    assert isinstance(resolve_profile(None, llava, llava_processor), Llava15Profile)
    assert resolve_profile("auto", llava, llava_processor).name == "llava-1.5"
    # another tower or language model under the "llava" type (Pixtral, LLaVA-Interleave): its template
    assert auto_name(config("llava", "pixtral", "mistral"), llava_processor) == "chat-template"
    assert auto_name(config("llava", "siglip_vision_model", "qwen2"), llava_processor) == "chat-template"
    assert auto_name(config("qwen2_vl"), llava_processor) == "chat-template"
    no_template = SimpleNamespace(chat_template=None)
    assert auto_name(config("paligemma"), no_template) == "paligemma"
    assert auto_name(config("fuyu"), no_template) == "fuyu"
    with pytest.raises(ProfileError, match="no known prompt format for 'blip'.*--prompt-profile"):
        auto_name(config("blip"), no_template)
    # an override: the model's own template for a LLaVA-1.5 model
    assert resolve_profile("chat-template", llava, llava_processor).name == "chat-template"


def test_profile_errors_name_the_option(llava_processor) -> None:
    no_template = SimpleNamespace(chat_template=None)
    with pytest.raises(ProfileError, match="unknown prompt profile 'vicuna'"):
        resolve_profile("vicuna", config("llava", "clip_vision_model", "llama"), llava_processor)
    with pytest.raises(ProfileError, match="no chat template; pass --prompt-profile paligemma"):
        resolve_profile("chat-template", config("paligemma"), no_template)
    with pytest.raises(ProfileError, match="'llava-1.5' is for llava models, not 'fuyu'.*--prompt-profile fuyu"):
        resolve_profile("llava-1.5", config("fuyu"), no_template)
    with pytest.raises(ProfileError, match="'paligemma' is for paligemma models"):
        resolve_profile("paligemma", config("llava", "clip_vision_model", "llama"), llava_processor)
    for name in ("paligemma", "fuyu"):
        with pytest.raises(ProfileError, match=f"question t1: prompt profile '{name}' needs an image"):
            PROFILES[name].render_question(SimpleNamespace(image_token="<image>"), Question(None, "Hi", "t1"))


def test_mixed_batches_are_refused(llava_processor) -> None:
    profile = PROFILES["llava-1.5"]
    prompts = [
        profile.render_question(llava_processor, Question(png(8, 8), "a", "1")),
        profile.render_question(llava_processor, Question(None, "b", "2")),
    ]
    with pytest.raises(ValueError, match="mixes text-only and image prompts"):
        processor_inputs(llava_processor, profile, prompts)
