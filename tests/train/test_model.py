"""Model assembly (in this process, no DeepSpeed): LLaVA-1.5 from a vision tower and a language
model, or from an existing LLaVA checkpoint; which parts train per stage; LoRA and its merge;
another vision tower (SigLIP); gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from som.train.config import load_config
from som.train.export import merge_lora
from som.train.model import ModelLoadError, assemble_llava, build_model, load_llava

PROMPT = "USER: <image>\nList the items. ASSISTANT: 1. dog"


def _config(parts, listing_data, **values):
    return load_config(
        {
            "vision_tower": parts.clip,
            "language_model": parts.lm,
            "local_files_only": True,
            "data_url": str(listing_data),
            "gradient_checkpointing": False,
            **values,
        }
    )


def _inputs(processor):
    image = Image.new("RGB", (40, 40), (10, 200, 30))
    inputs = processor(images=image, text=PROMPT, return_tensors="pt")
    inputs["labels"] = inputs["input_ids"].clone()
    return inputs


def test_assembled_from_clip_and_llama_parts(parts) -> None:
    from transformers import CLIPModel, LlamaForCausalLM

    model, processor = assemble_llava(parts.clip, parts.lm, local_files_only=True)
    clip = CLIPModel.from_pretrained(parts.clip).eval()
    lm = LlamaForCausalLM.from_pretrained(parts.lm)
    # the pretrained parts are the ones loaded, unchanged
    tower = model.model.vision_tower.state_dict()
    for name, value in clip.vision_model.state_dict().items():
        assert torch.equal(tower[name], value), name
    assert torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    assert not any(p.is_meta for p in model.parameters())
    # LLaVA's choices: <image> and a pad token added, penultimate layer, CLS dropped, 2-layer GELU MLP
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_index
    assert tokenizer.pad_token == "<unk>"  # as LLaVA pads Vicuna
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == lm.config.vocab_size + 1
    assert (model.config.vision_feature_layer, model.config.vision_feature_select_strategy) == (-2, "default")
    projector = model.model.multi_modal_projector
    assert (projector.linear_1.in_features, projector.linear_2.out_features) == (32, 64)

    inputs = _inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == 16  # (32/8)^2 patches
    with torch.no_grad():
        hidden = clip.vision_model(inputs["pixel_values"], output_hidden_states=True).hidden_states
        expected = projector(hidden[-2][:, 1:])
        features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]
        loss = model(**inputs).loss
    torch.testing.assert_close(features, expected[0])
    assert torch.isfinite(loss)


def test_siglip_tower_keeps_every_token(parts) -> None:
    model, processor = assemble_llava(parts.siglip, parts.lm, local_files_only=True)
    assert model.config.vision_feature_select_strategy == "full"
    assert type(model.model.vision_tower).__name__ == "SiglipVisionModel"
    inputs = _inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == 16  # no CLS
    assert torch.isfinite(model(**inputs).loss)


def test_stages_train_their_parts(parts, listing_data) -> None:
    pretrain = build_model(_config(parts, listing_data, stage="pretrain")).model
    finetune = build_model(_config(parts, listing_data)).model
    trained = {
        name.split(".")[1] if name.startswith("model.") else name.split(".")[0]
        for name, p in pretrain.named_parameters()
        if p.requires_grad
    }
    assert trained == {"multi_modal_projector"}
    trained = {
        name.split(".")[1] if name.startswith("model.") else name.split(".")[0]
        for name, p in finetune.named_parameters()
        if p.requires_grad
    }
    assert trained == {"multi_modal_projector", "language_model", "lm_head"}

    built = build_model(_config(parts, listing_data, stage="pretrain"))
    built.model(**_inputs(built.processor)).loss.backward()
    grads = {name: p.grad for name, p in built.model.named_parameters()}
    assert all(g is None for n, g in grads.items() if "vision_tower" in n or "language_model" in n)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "projector" in n)


def test_same_seed_same_projector(parts, listing_data) -> None:
    a = build_model(_config(parts, listing_data, seed=3)).model.model.multi_modal_projector
    b = build_model(_config(parts, listing_data, seed=3)).model.model.multi_modal_projector
    c = build_model(_config(parts, listing_data, seed=4)).model.model.multi_modal_projector
    assert torch.equal(a.linear_1.weight, b.linear_1.weight)
    assert not torch.equal(a.linear_1.weight, c.linear_1.weight)


def test_gradient_checkpointing_gives_the_same_gradients(parts, listing_data) -> None:
    grads = []
    for checkpointing in (False, True):
        built = build_model(_config(parts, listing_data, gradient_checkpointing=checkpointing))
        built.model.train()
        built.model(**_inputs(built.processor)).loss.backward()
        grads.append(built.model.model.multi_modal_projector.linear_1.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_lora_trains_adapters_and_projector_and_merges(parts, listing_data) -> None:
    config = _config(
        parts, listing_data, **{"lora.enabled": True, "lora.rank": 4, "lora.alpha": 8, "lora.dropout": 0.0}
    )
    model = build_model(config).model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable)
    assert not any("vision_tower" in n for n, p in model.named_parameters() if "lora_" in n)
    # make the adapters do something, then merge by hand and compare with peft's own merge
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    merged = merge_lora({k: v.clone() for k, v in model.state_dict().items()}, config.lora.alpha / config.lora.rank)
    reference = model.merge_and_unload().state_dict()
    assert set(merged) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(merged[key], value, msg=key)


def test_continue_from_an_existing_llava_checkpoint(tiny_llava, listing_data) -> None:
    from transformers import LlavaForConditionalGeneration

    built = build_model(
        load_config({"init_checkpoint": tiny_llava, "local_files_only": True, "data_url": str(listing_data)})
    )
    reference = LlavaForConditionalGeneration.from_pretrained(tiny_llava)
    for (name, value), (_, ref) in zip(built.model.state_dict().items(), reference.state_dict().items(), strict=False):
        assert torch.equal(value, ref), name
    assert built.processor.tokenizer.pad_token == "<pad>"
    assert not any(p.requires_grad for n, p in built.model.named_parameters() if "vision_tower" in n)


def test_missing_parts_name_the_part(parts, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=r"language_model .*nowhere.* could not be loaded \(local_files_only"):
        assemble_llava(parts.clip, str(tmp_path / "nowhere"), local_files_only=True)
    with pytest.raises(ModelLoadError, match="init_checkpoint .*nothing"):
        load_llava(str(tmp_path / "nothing"), local_files_only=True)
