"""Export the trained model as a plain transformers folder (``save_pretrained`` + processor) that
``LlavaForConditionalGeneration.from_pretrained`` / ``AutoProcessor.from_pretrained`` load.

ZeRO-3 keeps every weight split across ranks: all ranks gather them layer by layer into one
state dict on rank 0 (DeepSpeed's consolidated state dict), which then writes it. LoRA adapters
are merged into the weights they adapt (W + B A * alpha / r), so the export is an ordinary
LLaVA checkpoint with no peft needed to load it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from som import storage
from som.train.templates import VICUNA_SYSTEM

log = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
_LORA_A = re.compile(r"^(?P<layer>.+)\.lora_A\.(?P<adapter>[^.]+)\.weight$")

# LLaVA-1.5's vicuna_v1 prompt as a chat template, so `apply_chat_template` on the export gives
# exactly the text the model was trained on (som.train.templates, "two" style).
VICUNA_CHAT_TEMPLATE = (
    "{{ " + json.dumps(VICUNA_SYSTEM + " ") + " }}"
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for part in message['content'] %}{% if part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def full_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """Every weight of the engine's module, whole, on rank 0 (None elsewhere). Collective."""
    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict()
    if torch.distributed.get_rank() != 0:
        return None
    return {k: v.detach().cpu() for k, v in engine.module.state_dict().items()}


def merge_lora(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A peft LoRA state dict as the plain model's: adapters folded into their base weights,
    ``base_layer`` names restored, the peft prefix removed."""
    merged = {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()}
    for key in [k for k in merged if _LORA_A.match(k)]:
        match = _LORA_A.match(key)
        assert match
        layer, adapter = match["layer"], match["adapter"]
        a = merged.pop(key)
        b = merged.pop(f"{layer}.lora_B.{adapter}.weight")
        base = merged[f"{layer}.base_layer.weight"]
        delta = (b.float() @ a.float()) * scaling
        merged[f"{layer}.base_layer.weight"] = (base.float() + delta).to(base.dtype)
    return {k.replace(".base_layer.", "."): v for k, v in merged.items()}


def base_model(module: Any) -> Any:
    """The LlavaForConditionalGeneration inside a peft wrapper (or the module itself)."""
    return module.get_base_model() if hasattr(module, "get_base_model") else module


def write_export(
    module: Any,
    state: dict[str, torch.Tensor],
    processor: Any,
    folder: str | Path,
    *,
    lora_scaling: float | None = None,
    template: str | None = None,
) -> str:
    """Write `state` as `module`'s architecture plus `processor` into `folder`, atomically
    (a sibling temp folder renamed into place). Rank 0 only."""
    folder = Path(folder)
    if lora_scaling is not None:
        state = merge_lora(state, lora_scaling)
    model = base_model(module)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.config.use_cache = True
    model.save_pretrained(partial, state_dict=state)
    if template == "vicuna_v1" and not getattr(processor, "chat_template", None):
        processor.chat_template = VICUNA_CHAT_TEMPLATE
    processor.save_pretrained(partial)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    log.info("exported the model to %s", folder)
    return str(folder)


def upload_folder(local: str | Path, url: str) -> None:
    """Copy a local folder's files under `url` (object storage exports)."""
    local = Path(local)
    fs, _ = storage.resolve(url)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(path), storage.resolve(storage.join(url, *path.relative_to(local).parts))[1])
