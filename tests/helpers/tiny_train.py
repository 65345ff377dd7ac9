"""Tiny training inputs saved to folders: a Llama language model with an offline byte-level BPE
tokenizer, a SigLIP vision tower, and a synthetic Set-of-Mark listing dataset in LLaVA JSON.

The model folders load with ``from_pretrained(folder)``, the same path a hub id takes, so the
build-from-parts code runs exactly as with ``lmsys/vicuna-7b-v1.5`` and
``openai/clip-vit-large-patch14-336`` (see tests/helpers/tiny_clip.py for the CLIP tower).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.helpers.tiny_llava import train_byte_level_bpe

NAMES = ("person", "dog", "cat", "car", "tree", "cup", "chair", "bird")
QUESTIONS = (
    "List the items in the image one by one.",
    "Name each tagged item in order.",
    "What are the marked objects?",
)
# Words the tokenizer learns merges for; LLaVA's template words included.
_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions.",
    "USER: <image>\nList the items in the image one by one. ASSISTANT: 1. person\n2. dog",
    *[f"{i}. {name}\n" for i, name in enumerate(NAMES, 1)],
    *QUESTIONS,
]


def _tokenizer():  # -> PreTrainedTokenizerFast
    """Vicuna-like: <s>, </s>, <unk>, no pad token and no <image> token (the builder adds them)."""
    from transformers import PreTrainedTokenizerFast

    bpe = train_byte_level_bpe(_CORPUS, ["<unk>", "<s>", "</s>"], vocab_size=360)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_tiny_lm(folder: str | Path) -> str:
    """Save a tiny deterministic LlamaForCausalLM + tokenizer to `folder`; returns the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return str(folder)


def build_tiny_siglip(folder: str | Path) -> str:
    """Save a tiny SigLIP vision tower (no CLS token) + its image processor to `folder`."""
    import torch
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    torch.manual_seed(2)
    SiglipVisionModel(config).eval().save_pretrained(folder)
    return str(folder)


def _marked_image(path: Path, names: list[str], rng: random.Random, size: int = 48) -> None:
    """A flat 4:3 background with one coloured box per tag and its number on a black label."""
    from PIL import Image, ImageDraw

    width, height = size, size * 3 // 4
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for number, _ in enumerate(names, 1):
        x, y = rng.randrange(width - 16), rng.randrange(height - 16)
        draw.rectangle([x, y, x + 15, y + 15], fill=tuple(rng.randrange(256) for _ in range(3)))
        draw.rectangle([x + 4, y + 4, x + 11, y + 12], fill=(0, 0, 0))
        draw.text((x + 5, y + 3), str(number), fill=(255, 255, 255))
    image.save(path)


def make_listing_dataset(
    folder: str | Path, count: int = 16, seed: int = 0, name: str = "listing.json", image_size: int = 48
) -> Path:
    """`count` marked images (`image_size` px wide, 4:3) under `folder`/images and a LLaVA JSON
    whose answers list the tags ("1. person\\n2. dog"); returns the JSON's path (image paths
    are relative to `folder`)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for index in range(count):
        names = rng.sample(NAMES, rng.randint(1, 3))
        image = f"images/marked_{index:03d}.png"
        _marked_image(folder / image, names, rng, image_size)
        listing = "\n".join(f"{i}. {n}" for i, n in enumerate(names, 1))
        records.append(
            {
                "id": f"som-{index:03d}",
                "image": image,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{rng.choice(QUESTIONS)}"},
                    {"from": "gpt", "value": listing},
                ],
            }
        )
    path = folder / name
    path.write_text(json.dumps(records, indent=1))
    return path
