"""Tiny random image-text-to-text models of several VLM families, each saved to a folder.

Every folder loads offline through `AutoProcessor.from_pretrained(folder)` and
`AutoModelForImageTextToText.from_pretrained(folder)`, the same path a hub checkpoint of that family
takes, so evaluation code can be tested against each family's real processor quirks (special image
tokens, image splitting, BOS handling, chat templates, batching) without a download. Weights are random
and deterministic; tokenizers are tiny byte-level BPEs trained offline with the family's special tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.helpers.tiny_llava import _CORPUS as _LLAVA_CORPUS
from tests.helpers.tiny_llava import CHAT_TEMPLATE as _LLAVA_15_TEMPLATE
from tests.helpers.tiny_llava import build_tiny_llava, train_byte_level_bpe

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

FAMILIES: tuple[str, ...] = (
    "llava-1.5",
    "llava-next",
    "paligemma",
    "idefics3",
    "smolvlm",
    "qwen2-vl",
    "qwen2.5-vl",
    "internvl",
    "mllama",
    "gemma3",
    "fuyu",
)

# ----------------------------------------------------------------------------- chat templates
# Each template reproduces its family's official rendering of one user turn (image + text, or text
# only) plus the generation prompt; multi-turn and system messages are kept simple.

# llava-hf/llava-v1.6-mistral-7b-hf (model card: "[INST] <image>\nWhat is shown in this image? [/INST]");
# images first, then text, as in the official template. The tokenizer adds <s> itself.
_LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'][0]['text'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}[INST] "
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}<image>\n{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}"
    " [/INST]"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> ' }}"
    "{% endif %}{% endfor %}"
)

# HuggingFaceM4/Idefics3-8B-Llama3: "<|begin_of_text|>User:<image>What is it?<end_of_utterance>\nAssistant:"
# The template writes <|begin_of_text|> literally and the Llama-3 tokenizer also adds it, as on the hub.
_IDEFICS_TURNS = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
_IDEFICS3_TEMPLATE = "<|begin_of_text|>" + _IDEFICS_TURNS
# HuggingFaceTB/SmolVLM-Instruct: the same turns, opened by <|im_start|> (its bos token, which the
# SmolLM2 tokenizer does not add): "<|im_start|>User:<image>What is it?<end_of_utterance>\nAssistant:"
_SMOLVLM_TEMPLATE = "<|im_start|>" + _IDEFICS_TURNS

# Qwen/Qwen2-VL-7B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct (identical): a default system message, then
# "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n".
_QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# OpenGVLab/InternVL3-1B-hf: ChatML without a default system message, an image is "<IMG_CONTEXT>\n"
# before the text (the processor expands it to <img><IMG_CONTEXT>*N</img>).
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# meta-llama/Llama-3.2-11B-Vision-Instruct: starts with the bos token; a turn with an image has no
# system block, a text-only conversation gets the default one with the knowledge/today dates:
# "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What is it?<|eot_id|>"
# "<|start_header_id|>assistant<|end_header_id|>\n\n"
_MLLAMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text'] %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{%- set ns = namespace(has_images=false) %}"
    "{%- for message in messages %}{%- if message['content'] is not string %}"
    "{%- for content in message['content'] %}{%- if content['type'] == 'image' %}"
    "{%- set ns.has_images = true %}{%- endif %}{%- endfor %}{%- endif %}{%- endfor %}"
    "{%- if not ns.has_images or system_message %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- else %}"
    "{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# google/gemma-3-4b-it: starts with the bos token, the assistant role is "model", text is trimmed:
# "<bos><start_of_turn>user\n<start_of_image>What is it?<end_of_turn>\n<start_of_turn>model\n"
# (the processor expands <start_of_image> to "\n\n<start_of_image><image_soft_token>*N<end_of_image>\n\n").
_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

# The template each family's processor is saved with; None where the hub checkpoint has none
# (PaliGemma and Fuyu are prompted with plain text, their processors add the image tokens).
CHAT_TEMPLATES: dict[str, str | None] = {
    "llava-1.5": _LLAVA_15_TEMPLATE,
    "llava-next": _LLAVA_NEXT_TEMPLATE,
    "paligemma": None,
    "idefics3": _IDEFICS3_TEMPLATE,
    "smolvlm": _SMOLVLM_TEMPLATE,
    "qwen2-vl": _QWEN2_VL_TEMPLATE,
    "qwen2.5-vl": _QWEN2_VL_TEMPLATE,
    "internvl": _INTERNVL_TEMPLATE,
    "mllama": _MLLAMA_TEMPLATE,
    "gemma3": _GEMMA3_TEMPLATE,
    "fuyu": None,
}

# ----------------------------------------------------------------------------- tokenizers

_CORPUS = [
    *_LLAVA_CORPUS,
    "What is in the image? Describe it in one sentence. Answer with a single word.",
    "The quick brown fox jumps over the lazy dog. A cat sits on a red mat near the window.",
    "caption en answer en What color is the car? The car is blue. Generate a coco-style caption.",
    "user model assistant system You are a helpful assistant. User: Assistant: Hello, how are you?",
    "Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024 0123456789",
]


def _tokenizer(
    specials: list[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    unk: str | None = None,
    add_bos: bool = False,
    named: dict[str, str] | None = None,
    vocab_size: int = 400,
) -> PreTrainedTokenizerBase:
    """A tiny byte-level BPE holding the family's special tokens as single ids.

    `named` become tokenizer attributes (tokenizer.image_token, .image_token_id, ...), which several
    processors read; `add_bos` mirrors whether the family's real tokenizer prepends its bos token.
    """
    from transformers import PreTrainedTokenizerFast

    ordered = [t for t in (pad, eos, bos, unk) if t] + specials + list((named or {}).values())
    all_specials = list(dict.fromkeys(ordered))
    bpe = train_byte_level_bpe(_CORPUS, all_specials, vocab_size=vocab_size + len(all_specials))
    kwargs: dict[str, Any] = {
        "tokenizer_object": bpe,
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "add_bos_token": add_bos,
        "add_eos_token": False,
    }
    if unk:
        kwargs["unk_token"] = unk
    if named:
        kwargs["extra_special_tokens"] = dict(named)
    return PreTrainedTokenizerFast(**kwargs)


def _ids(tokenizer: PreTrainedTokenizerBase, *tokens: str) -> list[int]:
    """Ids of tokens that must be single entries of the vocabulary (configs point at them)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    if not all(isinstance(i, int) and i != tokenizer.unk_token_id for i in ids):
        raise ValueError(f"tokens {tokens} are not all in the vocabulary: {ids}")
    return ids


# ----------------------------------------------------------------------------- models


def _init(
    model_cls: Callable[[Any], PreTrainedModel], config: Any, init_range: float | None = None, seed: int = 0
) -> PreTrainedModel:
    """Random weights under a fixed seed, so every build of a family is identical.

    `init_range` overrides the initializer std where the default one leaves a family's tiny model emitting
    the same token whatever the prompt (which would hide batching bugs in tests).
    """
    import torch

    if init_range is not None:
        for sub in (config, config.get_text_config(), getattr(config, "vision_config", None)):
            if sub is not None and hasattr(sub, "initializer_range"):
                sub.initializer_range = init_range
    torch.manual_seed(seed)
    return model_cls(config).eval()


def _never_end(model: PreTrainedModel, eos_ids: list[int]) -> None:
    """Zero the eos rows of the output embedding: their logit is then 0, below the max of the random
    logits, so greedy generation runs to max_new_tokens instead of stopping at a random early eos."""
    import torch

    with torch.no_grad():
        model.get_output_embeddings().weight[eos_ids] = 0.0


# ----------------------------------------------------------------------------- families
# Each builder returns (processor, model, generation eos ids); the model is built under a fixed seed.

_Built = tuple["ProcessorMixin", "PreTrainedModel", list[int]]


def _llava_next() -> _Built:
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
    )

    tok = _tokenizer(
        ["<image>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=True, named={"image_token": "<image>"}
    )
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATES["llava-next"],
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    text = MistralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=_ids(tok, "<image>")[0],
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=16,
    )
    return processor, _init(LlavaNextForConditionalGeneration, config), [tok.eos_token_id]


def _qwen2_vl(v25: bool = False) -> _Built:
    from transformers import Qwen2VLImageProcessor

    if v25:
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLVideoProcessor,
        )
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor

    named = {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_bos_token": "<|vision_start|>",
        "vision_eos_token": "<|vision_end|>",
    }
    tok = _tokenizer(["<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>", pad="<|endoftext|>", named=named)
    # patch 4 x merge 2: an image is resized to a multiple of 8 px with 16*16..32*32 pixels.
    pixels = {"min_pixels": 16 * 16, "max_pixels": 32 * 32, "patch_size": 4, "temporal_patch_size": 2, "merge_size": 2}
    image_processor = Qwen2VLImageProcessor(**pixels)
    video_processor = Qwen2VLVideoProcessor(**pixels)
    processor_cls = Qwen2_5_VLProcessor if v25 else Qwen2VLProcessor
    family = "qwen2.5-vl" if v25 else "qwen2-vl"
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATES[family],
    )
    image_id, video_id, start_id, end_id = _ids(
        tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
    )
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}  # head_dim 16
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tok),
        "max_position_embeddings": 512,
        "rope_parameters": rope,
        "bos_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if v25:
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "window_size": 16,
            "fullatt_block_indexes": [1],
        }
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=image_id,
            video_token_id=video_id,
            vision_start_token_id=start_id,
            vision_end_token_id=end_id,
        )
        model_cls = Qwen2_5_VLForConditionalGeneration
    else:
        vision = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        config = Qwen2VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=image_id,
            video_token_id=video_id,
            vision_start_token_id=start_id,
            vision_end_token_id=end_id,
        )
        model_cls = Qwen2VLForConditionalGeneration
    return processor, _init(model_cls, config, 0.1), [tok.eos_token_id, tok.pad_token_id]


def _paligemma() -> _Built:
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    # The Gemma tokenizer adds <bos>; PaliGemmaProcessor turns that off and writes <image>*N<bos>text\n itself.
    tok = _tokenizer(["<image>"], bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True)
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16  # (32 px / 8 px patches) ** 2, as the hub preprocessor_config has it
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds 1152 <loc>/<seg> tokens
    text = {
        "model_type": "gemma",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": len(tok),
        "max_position_embeddings": 512,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    config = PaliGemmaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=_ids(tok, "<image>")[0],
        vocab_size=len(tok),
        projection_dim=64,
        hidden_size=64,
    )
    return processor, _init(PaliGemmaForConditionalGeneration, config, 0.2), [tok.eos_token_id]


_ROW_COL = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
_IDEFICS_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}  # 16 patches, pixel-shuffled by 2 -> 4 tokens per tile


def _llama_text(tok: PreTrainedTokenizerBase, **extra: Any) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tok),
        "max_position_embeddings": 1024,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        **extra,
    }


def _idefics3() -> _Built:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    tok = _tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *_ROW_COL, "<|end_of_text|>"],
        bos="<|begin_of_text|>",
        eos="<end_of_utterance>",
        pad="<pad>",
        add_bos=True,
    )
    # Images up to 64 px are split into 32 px tiles (<row_i_col_j>) plus a 32 px global view.
    image_processor = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=CHAT_TEMPLATES["idefics3"]
    )
    config = Idefics3Config(
        vision_config=_IDEFICS_VISION,
        text_config=_llama_text(tok),
        scale_factor=2,
        image_token_id=_ids(tok, "<image>")[0],
        pad_token_id=tok.pad_token_id,
    )
    return (
        processor,
        _init(Idefics3ForConditionalGeneration, config),
        _ids(tok, "<end_of_utterance>", "<|end_of_text|>"),
    )


def _smolvlm() -> _Built:
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )
    from transformers.utils import is_num2words_available

    if not is_num2words_available():
        raise ImportError(
            "tiny smolvlm: transformers' SmolVLMProcessor needs the `num2words` package "
            "(pip install num2words) even to load; it is not installed"
        )
    named = {
        "image_token": "<image>",
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
        "end_of_utterance_token": "<end_of_utterance>",
    }
    # SmolLM2 tokenizer: <|im_start|> is bos but is not added, <|im_end|> pads.
    tok = _tokenizer(
        [*_ROW_COL, "<|im_end|>", "<video>"],
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|im_end|>",
        unk="<|endoftext|>",
        named=named,
    )
    sizes = {"size": {"longest_edge": 64}, "max_image_size": {"longest_edge": 32}}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**sizes),
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(**sizes),
        image_seq_len=4,
        chat_template=CHAT_TEMPLATES["smolvlm"],
    )
    config = SmolVLMConfig(
        vision_config=_IDEFICS_VISION,
        text_config=_llama_text(tok),
        scale_factor=2,
        image_token_id=_ids(tok, "<image>")[0],
        pad_token_id=tok.pad_token_id,
    )
    return processor, _init(SmolVLMForConditionalGeneration, config), [tok.eos_token_id]


def _internvl() -> _Built:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    named = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tok = _tokenizer(["<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>", pad="<|endoftext|>", named=named)
    # Images are cropped into up to 4 tiles of 32 px plus a thumbnail, 4 <IMG_CONTEXT> tokens each.
    image_processor = GotOcr2ImageProcessor(
        size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1, max_patches=4
    )
    video_processor = InternVLVideoProcessor(size={"height": 32, "width": 32})
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        image_seq_length=4,
        chat_template=CHAT_TEMPLATES["internvl"],
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": [32, 32],
        "patch_size": [8, 8],
    }
    text = {
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tok),
        "max_position_embeddings": 1024,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.context_image_token_id,
        image_seq_length=4,
        downsample_ratio=0.5,
    )
    return processor, _init(InternVLForConditionalGeneration, config, 0.2), [tok.eos_token_id, tok.pad_token_id]


def _mllama() -> _Built:
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor, MllamaProcessor

    # Llama-3 tokenizer: adds <|begin_of_text|>; the instruct checkpoint stops on <|eot_id|>.
    tok = _tokenizer(
        ["<|image|>", "<|python_tag|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|end_of_text|>"],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        add_bos=True,
    )
    image_processor = MllamaImageProcessor(size={"height": 32, "width": 32}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=CHAT_TEMPLATES["mllama"])
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_global_layers": 1,
        "attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        "max_num_tiles": 4,
        "intermediate_layers_indices": [0],
        "vision_output_dim": 64,
    }
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tok),
        "max_position_embeddings": 1024,
        "cross_attention_layers": [1],
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=_ids(tok, "<|image|>")[0])
    eos_ids = _ids(tok, "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")  # as the instruct generation_config
    return processor, _init(MllamaForConditionalGeneration, config, 0.2), eos_ids


def _gemma3() -> _Built:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = _tokenizer(
        ["<start_of_turn>", "<end_of_turn>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
        named=named,
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tok,
        image_seq_length=4,
        chat_template=CHAT_TEMPLATES["gemma3"],
    )
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 64,
        "vocab_size": len(tok),
        "max_position_embeddings": 1024,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    boi, eoi, image = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    # 4x4 patches average-pooled to 2x2 = 4 soft tokens per image.
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=image,
    )
    return processor, _init(Gemma3ForConditionalGeneration, config), _ids(tok, "<eos>", "<end_of_turn>")


def _fuyu() -> _Built:
    from tokenizers import AddedToken, Regex, normalizers
    from transformers import FuyuConfig, FuyuForCausalLM, FuyuImageProcessor, FuyuProcessor, PreTrainedTokenizerFast

    # Fuyu's SentencePiece tokenizer turns "|SPEAKER|...|NEWLINE|" into "▁", |SPEAKER|, ... and FuyuProcessor
    # drops that first "▁". Here a normalizer prepends "▁" to text of 10+ characters (so not to the 9-character
    # |SPEAKER| / |NEWLINE| added tokens themselves, which are matched after normalization).
    # <0x04> is the beginning-of-answer token the processor appends to every prompt; id 0 pads.
    specials = ["<pad>", "|ENDOFTEXT|", "<s>", "<unk>", "<0x00>", "<0x01>", "<0x02>", "<0x03>", "<0x04>"]
    bpe = train_byte_level_bpe(_CORPUS, specials, vocab_size=400 + len(specials))
    bpe.normalizer = normalizers.Replace(Regex(r"^(?=[\s\S]{10})"), "\u2581")
    bpe.add_tokens(
        [
            AddedToken("\u2581", normalized=True, special=False),
            AddedToken("|SPEAKER|", normalized=True, special=False),
            AddedToken("|NEWLINE|", normalized=True, special=False),
        ]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="|ENDOFTEXT|",
        eos_token="|ENDOFTEXT|",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=False,
        add_eos_token=False,
    )
    # Images are fitted into 64x64 and cut into 16 px patches, one row of |SPEAKER| per patch row.
    image_processor = FuyuImageProcessor(size={"height": 64, "width": 64}, patch_size={"height": 16, "width": 16})
    processor = FuyuProcessor(image_processor=image_processor, tokenizer=tok)
    text = {
        "model_type": "persimmon",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": len(tok),
        "max_position_embeddings": 1024,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    config = FuyuConfig(
        text_config=text,
        image_size=64,
        patch_size=16,
        image_token_id=_ids(tok, "|SPEAKER|")[0],
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return processor, _init(FuyuForCausalLM, config), [tok.eos_token_id]


_BUILDERS: dict[str, Callable[[], _Built]] = {
    "llava-next": _llava_next,
    "qwen2-vl": _qwen2_vl,
    "qwen2.5-vl": lambda: _qwen2_vl(v25=True),
    "paligemma": _paligemma,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "internvl": _internvl,
    "mllama": _mllama,
    "gemma3": _gemma3,
    "fuyu": _fuyu,
}


def build_tiny(family: str, folder: str | Path) -> str:
    """Save a tiny deterministic model + processor of `family` to `folder`; returns the folder."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if family == "llava-1.5":
        return build_tiny_llava(folder)
    folder = Path(folder)
    processor, model, eos_ids = _BUILDERS[family]()
    _never_end(model, eos_ids)
    tok = processor.tokenizer
    generation = model.generation_config
    generation.pad_token_id = tok.pad_token_id
    generation.bos_token_id = tok.bos_token_id if tok.bos_token_id is not None else tok.pad_token_id
    generation.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return str(folder)
