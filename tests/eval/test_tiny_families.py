"""Smoke test of tests/helpers/tiny_families: every family builds, loads offline through the Auto classes,
renders its official prompt format, and generates greedily, alone and in a left-padded batch of two
prompts whose images differ in size. Each family is built once per module (about 1-2 s each on CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.tiny_families import CHAT_TEMPLATES, FAMILIES, build_tiny

TEXT = "What is it?"
OTHER_TEXT = "Describe the picture in one short sentence, please."

# One user turn with an image, and one text-only turn, each with the generation prompt, in each family's
# official format (see the comments on the templates in tiny_families).
EXPECTED_PROMPTS: dict[str, tuple[str, str | None]] = {
    "llava-1.5": ("USER: <image>\nWhat is it? ASSISTANT:", "USER: Say hi. ASSISTANT:"),
    "llava-next": ("[INST] <image>\nWhat is it? [/INST]", "[INST] Say hi. [/INST]"),
    "idefics3": (
        "<|begin_of_text|>User:<image>What is it?<end_of_utterance>\nAssistant:",
        "<|begin_of_text|>User: Say hi.<end_of_utterance>\nAssistant:",
    ),
    "smolvlm": (
        "<|im_start|>User:<image>What is it?<end_of_utterance>\nAssistant:",
        "<|im_start|>User: Say hi.<end_of_utterance>\nAssistant:",
    ),
    "qwen2-vl": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Say hi.<|im_end|>\n<|im_start|>assistant\n",
    ),
    "internvl": (
        "<|im_start|>user\n<IMG_CONTEXT>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n",
    ),
    "mllama": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What is it?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
        "December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "Say hi.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "gemma3": (
        "<bos><start_of_turn>user\n<start_of_image>What is it?<end_of_turn>\n<start_of_turn>model\n",
        "<bos><start_of_turn>user\nSay hi.<end_of_turn>\n<start_of_turn>model\n",
    ),
    # No chat template on the hub: the model cards' plain prompts; the processors add image tokens and bos.
    "paligemma": ("<image>answer en What is it?", None),
    "fuyu": ("What is it?\n", None),
}
EXPECTED_PROMPTS["qwen2.5-vl"] = EXPECTED_PROMPTS["qwen2-vl"]

# Processors that reject a flat image list for a batch (they need one list of images per prompt).
NESTED_ONLY = {"smolvlm", "mllama", "gemma3"}


class Loaded:
    """A family's folder, reloaded the way a hub checkpoint would be, with no network."""

    def __init__(self, family: str, folder: str) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.family = family
        self.folder = folder
        self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True).eval()
        self.processor.tokenizer.padding_side = "left"

    @property
    def templated(self) -> bool:
        return CHAT_TEMPLATES[self.family] is not None

    def prompt(self, text: str, image: bool = True) -> str:
        """The rendered prompt: the chat template where the family has one, else the model card's format."""
        if not self.templated:
            return {"paligemma": f"<image>answer en {text}", "fuyu": f"{text}\n"}[self.family]
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def inputs(self, prompts: list[str], images: list[Any] | None) -> Any:
        """Processor inputs; the tokenizer's own bos is skipped when the template already wrote it."""
        bos = self.processor.tokenizer.bos_token
        add_special = not (self.templated and bos is not None and prompts[0].startswith(bos))
        return self.processor(
            images=images, text=prompts, padding=True, return_tensors="pt", add_special_tokens=add_special
        )

    def generate(self, prompts: list[str], images: list[Any] | None) -> list[list[int]]:
        import torch

        inputs = self.inputs(prompts, images)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        return out[:, inputs["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, offline: None) -> Loaded:
    family = request.param
    folder = build_tiny(family, tmp_path_factory.mktemp(family.replace(".", "_")))
    return Loaded(family, folder)


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """Offline for the whole module: any hub lookup would fail instead of downloading."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def images() -> list[Any]:
    """Two random images of different sizes and aspect ratios."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (56, 24, 3), dtype=np.uint8)),
    ]


def test_build_unknown_family(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny("blip-2", tmp_path)


def test_folder_and_templates(loaded: Loaded) -> None:
    folder = Path(loaded.folder)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert loaded.processor.chat_template == CHAT_TEMPLATES[loaded.family]
    with_image, text_only = EXPECTED_PROMPTS[loaded.family]
    assert loaded.prompt(TEXT) == with_image
    if text_only is not None:
        assert loaded.prompt("Say hi.", image=False) == text_only
    generation = loaded.model.generation_config
    assert generation.pad_token_id is not None and generation.eos_token_id is not None


def test_one_image_generates(loaded: Loaded, images: list[Any]) -> None:
    [new] = loaded.generate([loaded.prompt(TEXT)], [images[0]])
    assert len(new) == 3  # eos is never the argmax, so greedy runs to max_new_tokens
    assert loaded.generate([loaded.prompt(TEXT)], [images[0]]) == [new]  # deterministic


def test_bos_appears_once(loaded: Loaded, images: list[Any]) -> None:
    """Templates that write the bos themselves (gemma3, mllama, idefics3) get a second one from the
    tokenizer unless it is told add_special_tokens=False; `Loaded.inputs` does, so there is one."""
    tokenizer = loaded.processor.tokenizer
    ids = loaded.inputs([loaded.prompt(TEXT)], [images[0]])["input_ids"][0].tolist()
    family, bos = loaded.family, tokenizer.bos_token_id
    if family in ("qwen2-vl", "qwen2.5-vl", "internvl"):
        assert bos is None  # ChatML, no bos
    elif family == "llava-1.5":
        assert bos not in ids  # tiny_llava's tokenizer adds no <s> (a real llava-1.5 one does)
    elif family in ("paligemma", "fuyu"):  # the processor writes <image>*N<bos>prompt / |SPEAKER|...<s>prompt
        assert ids.count(tokenizer.convert_tokens_to_ids("<bos>" if family == "paligemma" else "<s>")) == 1
    else:
        assert ids[0] == bos and ids.count(bos) == 1
    if family in ("gemma3", "mllama", "idefics3"):
        doubled = loaded.processor(images=[images[0]], text=[loaded.prompt(TEXT)])["input_ids"][0]
        assert list(doubled[:2]) == [bos, bos]


def test_text_only_generates(loaded: Loaded) -> None:
    if not loaded.templated:
        pytest.skip(f"{loaded.family} is prompted with an image only")
    [new] = loaded.generate([loaded.prompt("Say hi.", image=False)], None)
    assert len(new) == 3


def test_batch_with_left_padding_equals_one_by_one(loaded: Loaded, images: list[Any]) -> None:
    prompts = [loaded.prompt(TEXT), loaded.prompt(OTHER_TEXT)]
    single = [loaded.generate([p], [im])[0] for p, im in zip(prompts, images, strict=False)]
    nested = loaded.generate(prompts, [[im] for im in images])
    lengths = [loaded.inputs([p], [im])["input_ids"].shape[1] for p, im in zip(prompts, images, strict=False)]
    assert lengths[0] != lengths[1]  # so the batch is padded
    assert single[0] != single[1]  # else equality below would not show that padding is harmless
    assert nested == single
    if loaded.family in NESTED_ONLY:
        with pytest.raises(ValueError, match="images"):
            loaded.generate(prompts, images)
    else:
        assert loaded.generate(prompts, images) == single
