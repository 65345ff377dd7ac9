"""Every VLM family end to end through `load_model(folder).answer(...)` on tiny random models
(tests.helpers.tiny_families): the profile "auto" picks, exactly one BOS per row, images nested
per prompt where the processor needs it, batched answers equal to one-by-one answers with mixed
image sizes, and clear errors for questions or profiles a family cannot take."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from som.eval.models import HFModel, Question, load_model
from som.eval.profiles import NESTED_IMAGE_PROCESSORS, ProfileError, processor_inputs
from tests.helpers.data import data_path
from tests.helpers.tiny_families import FAMILIES, build_tiny

EXPECTED_PROFILE = {"llava-1.5": "llava-1.5", "paligemma": "paligemma", "fuyu": "fuyu"}
IMAGE_ONLY = {"paligemma", "fuyu"}
BOS_IN_TEMPLATE = {"idefics3", "smolvlm", "mllama", "gemma3"}


def noise_png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


QUESTIONS = [Question(data_path("extreme_ironing.jpg").read_bytes(), "What is unusual about this image?", "photo")] + [
    Question(
        noise_png(24 + 11 * i, 48 - 4 * i, i),
        ("Is there a dog?", "How many cars are there? Answer with a single number.", "Describe it.")[i % 3],
        f"noise{i}",
    )
    for i in range(8)
]
TEXT_ONLY = [Question(None, "Say hello.", "t1"), Question(None, "What is two plus two? Answer briefly.", "t2")]


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """The folder of a family's tiny model, built once per session on first use."""
    built: dict[str, str] = {}

    def folder(family: str) -> str:
        if family not in built:
            built[family] = build_tiny(family, tmp_path_factory.mktemp(family))
        return built[family]

    return folder


@pytest.fixture(scope="module")
def family_model(tiny_family: Callable[[str], str]) -> Callable[[str], HFModel]:
    """A family's model loaded once per module, with an untied random read-out: tiny models with
    tied embeddings only echo the prompt's last token, which would make every comparison trivial."""
    loaded: dict[str, HFModel] = {}

    def model(family: str) -> HFModel:
        if family not in loaded:
            vlm = load_model(tiny_family(family), local_files_only=True, max_new_tokens=4, batch_size=8)
            assert isinstance(vlm, HFModel)
            torch.manual_seed(0)
            head = vlm.model.get_output_embeddings()
            head.weight = torch.nn.Parameter(torch.randn_like(head.weight))
            loaded[family] = vlm
        return loaded[family]

    return model


def attended_rows(encoded) -> list[list[int]]:
    return [
        [t for t, m in zip(ids, mask, strict=True) if m]
        for ids, mask in zip(encoded["input_ids"].tolist(), encoded["attention_mask"].tolist(), strict=True)
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_profile_and_exactly_one_bos(family: str, family_model: Callable[[str], HFModel]) -> None:
    vlm = family_model(family)
    assert vlm.profile.name == EXPECTED_PROFILE.get(family, "chat-template")
    tokenizer = vlm.tokenizer
    questions = QUESTIONS[:2] + ([] if family in IMAGE_ONLY else TEXT_ONLY[:1])
    for question in questions:
        prompt = vlm.prompt(question)
        assert question.prompt in prompt.text
        if family in BOS_IN_TEMPLATE:
            assert prompt.text.startswith(tokenizer.bos_token)
        [row] = attended_rows(processor_inputs(vlm.processor, vlm.profile, [prompt]))
        # Fuyu's processor writes "<s>" after the image tokens, whatever the tokenizer's bos_token
        bos = tokenizer.convert_tokens_to_ids("<s>") if family == "fuyu" else tokenizer.bos_token_id
        if bos is None:  # Qwen-based families have no BOS
            continue
        assert row.count(bos) == 1, (family, tokenizer.convert_ids_to_tokens(row[:4]))
        if family not in IMAGE_ONLY:  # PaliGemma's and Fuyu's BOS follows their image tokens
            assert row[0] == bos


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_answers_equal_one_by_one(family: str, family_model: Callable[[str], HFModel]) -> None:
    vlm = family_model(family)
    questions = QUESTIONS + ([] if family in IMAGE_ONLY else TEXT_ONLY)
    batched = vlm.answer(questions)
    assert len(batched) == len(questions) and any(batched)
    assert batched == [vlm.answer([q])[0] for q in questions]


@pytest.mark.parametrize("family", FAMILIES)
def test_images_are_nested_only_where_the_processor_needs_it(
    family: str, family_model: Callable[[str], HFModel]
) -> None:
    vlm = family_model(family)
    prompts = [vlm.prompt(q) for q in QUESTIONS[1:3]]
    flat = [image for p in prompts for image in p.images]
    needs_nesting = type(vlm.processor).__name__ in NESTED_IMAGE_PROCESSORS
    if needs_nesting:
        with pytest.raises(ValueError, match="number of .* tokens in each prompt"):
            vlm.processor(text=[p.text for p in prompts], images=flat, padding=True, return_tensors="pt")
    encoded = processor_inputs(vlm.processor, vlm.profile, prompts)
    assert len(attended_rows(encoded)) == 2


@pytest.mark.parametrize("family", sorted(IMAGE_ONLY))
def test_image_only_families_refuse_text_only_and_other_profiles(
    family: str, tiny_family: Callable[[str], str], family_model: Callable[[str], HFModel]
) -> None:
    with pytest.raises(ProfileError, match=f"question t1: prompt profile '{family}' needs an image"):
        family_model(family).answer([QUESTIONS[0], TEXT_ONLY[0]])
    for other in ("chat-template", "llava-1.5"):
        with pytest.raises(ProfileError, match=f"--prompt-profile {family}"):
            load_model(tiny_family(family), local_files_only=True, prompt_profile=other)


def test_llava15_can_take_its_own_chat_template(tiny_family: Callable[[str], str]) -> None:
    vlm = load_model(tiny_family("llava-1.5"), local_files_only=True, prompt_profile="chat-template", max_new_tokens=2)
    assert vlm.prompt_text(QUESTIONS[1]) == "USER: <image>\nIs there a dog? ASSISTANT:"
