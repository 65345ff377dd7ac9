"""What the GPU paths depend on, checked on the CPU: the same module order for image and
text-only micro-batches (ZeRO-3 gathers weights collectively, in order), the GPU a local rank
gets, native-bf16 detection, the process-group timeout, and weights partitioned as they are
built under ZeRO-3 (a real 1-process gloo run)."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from som import devices
from som.train.config import ConfigError, load_config
from som.train.deepspeed_config import resolve_precision
from som.train.distributed import DeviceError, gpu_for_local_rank
from som.train.model import BlankImagePass, build_model, forward_loss
from tests.helpers.training import REPO_ROOT, training_env

# ----------------------------------------------------------------------------- module order


def _batches(processor: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    image = Image.new("RGB", (40, 40), (10, 200, 30))
    with_image = dict(
        processor(
            images=[image, image],
            text=["USER: <image>\nList. ASSISTANT: 1. dog"] * 2,
            return_tensors="pt",
            padding=True,
        )
    )
    text = dict(
        processor.tokenizer(
            ["USER: Name one. ASSISTANT: cat", "USER: Hi. ASSISTANT: dog"], return_tensors="pt", padding=True
        )
    )
    for batch in (with_image, text):
        batch["labels"] = batch["input_ids"].clone()
        batch["ids"] = ["a", "b"]
    return with_image, text


def _record(model: torch.nn.Module, blank: BlankImagePass, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The modules called in forward (pre-hooks, outermost first) and the order in which the
    trainable parameters receive their gradients in backward."""
    forward: list[str] = []
    grads: list[str] = []
    handles = [
        module.register_forward_pre_hook(lambda m, a, name=name: forward.append(name))
        for name, module in model.named_modules()
    ]
    handles += [
        param.register_post_accumulate_grad_hook(lambda p, name=name: grads.append(name))
        for name, param in model.named_parameters()
        if param.requires_grad
    ]
    try:
        loss = forward_loss(model, batch, blank, torch.device("cpu"), torch.float32)
        assert torch.isfinite(loss)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    model.zero_grad(set_to_none=True)
    return forward, grads


@pytest.mark.parametrize("lora", [False, True])
def test_text_only_batches_call_the_modules_in_the_image_batch_order(parts, listing_data, lora) -> None:
    values = {
        "vision_tower": parts.clip,
        "language_model": parts.lm,
        "local_files_only": True,
        "data_url": str(listing_data),
        "gradient_checkpointing": False,
    }
    if lora:
        values["lora"] = {"enabled": True, "rank": 4, "alpha": 8}
    built = build_model(load_config(values))
    model = built.model
    blank = BlankImagePass(model)
    with_image, text = _batches(built.processor)
    image_forward, image_grads = _record(model, blank, with_image)
    text_forward, text_grads = _record(model, blank, text)
    tower = [i for i, name in enumerate(image_forward) if ".vision_tower" in name]
    language = [i for i, name in enumerate(image_forward) if ".language_model.layers" in name]
    assert tower and language and max(tower) < min(language)  # the tower runs before the LM
    assert text_forward == image_forward
    assert text_grads == image_grads
    assert any("multi_modal_projector" in name for name in text_grads)  # a gradient on every rank
    # the blank pass adds exactly 0: the text loss is the plain language-model loss
    with torch.no_grad():
        plain = model(**{k: v for k, v in text.items() if k != "ids"}).loss
        armed = forward_loss(model, text, blank, torch.device("cpu"), torch.float32)
    assert torch.equal(plain, armed)
    blank.remove()


# ----------------------------------------------------------------------------- devices


def test_local_ranks_get_their_own_gpu_or_a_clear_error() -> None:
    assert gpu_for_local_rank(3, 8, 8) == 3
    assert gpu_for_local_rank(0, 8) == 0
    assert gpu_for_local_rank(5, 1, 8) == 0  # one GPU per task (CUDA_VISIBLE_DEVICES per rank)
    with pytest.raises(DeviceError, match="8 local ranks on this node but only 4 GPUs"):
        gpu_for_local_rank(1, 4, 8)  # every rank fails, not only the ranks without a GPU
    with pytest.raises(DeviceError, match="local rank 4"):
        gpu_for_local_rank(4, 2)
    with pytest.raises(DeviceError, match="none is visible"):
        gpu_for_local_rank(0, 0)


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int] | None) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.version, "hip", None)
    # what torch itself would answer on a V100: True, counting emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.mark.parametrize(
    ("capability", "native"), [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True), (None, False)]
)
def test_auto_precision_needs_native_bf16(monkeypatch, capability, native) -> None:
    _fake_gpu(monkeypatch, capability)
    cuda = torch.device("cuda", 0)
    assert devices.native_bf16(cuda) is native
    assert devices.native_bf16(torch.device("cpu")) is False
    config = load_config({"init_checkpoint": "x", "data_url": "d.json"})
    expected = torch.bfloat16 if native else torch.float32
    assert resolve_precision(config, cuda) == expected  # training: fp32 without native bf16
    assert devices.auto_dtype(cuda, without_bf16=torch.float16) == (
        torch.bfloat16 if native else torch.float16 if capability else torch.float32
    )  # evaluation
    assert devices.auto_dtype("cpu", without_bf16=torch.float16) == torch.float32


def test_tf32_only_from_ampere_on(monkeypatch) -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        _fake_gpu(monkeypatch, (7, 0))
        assert devices.enable_tf32("cuda") is False
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert devices.enable_tf32("cpu") is False
        _fake_gpu(monkeypatch, (8, 6))
        assert devices.enable_tf32("cuda:0") is True
        assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_dist_timeout_is_a_config_field() -> None:
    base = {"init_checkpoint": "x", "data_url": "d.json"}
    assert load_config(base).dist_timeout_min == 120
    assert load_config(base, {"dist_timeout_min": "240"}).dist_timeout_min == 240
    # operational: changing it neither changes the fingerprint nor blocks a resume
    assert load_config(base, {"dist_timeout_min": 30}).fingerprint() == load_config(base).fingerprint()
    with pytest.raises(ConfigError, match="dist_timeout_min"):
        load_config(base, {"dist_timeout_min": 0})


def test_the_timeout_reaches_deepspeed(monkeypatch) -> None:
    import deepspeed

    from som.train import distributed

    seen: dict[str, Any] = {}
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kwargs: seen.update(kwargs))
    for name in distributed.LAUNCHER_VARS:  # set first, so that undo removes what the call sets
        monkeypatch.setenv(name, "unset")  # (a leaked MASTER_PORT would reach later Slurm jobs)
        monkeypatch.delenv(name)
    monkeypatch.setattr(distributed, "choose_device", lambda rank: (torch.device("cpu"), "gloo"))
    distributed.init_distributed(timeout_min=45)
    assert seen["timeout"] == datetime.timedelta(minutes=45) and seen["dist_backend"] == "gloo"


# ----------------------------------------------------------------------------- ZeRO-3 construction

_ZERO3_SCRIPT = textwrap.dedent("""
    import datetime, json, logging, sys
    import torch
    from som.train.config import load_config
    from som.train.deepspeed_config import build_deepspeed_config
    from som.train.distributed import init_distributed, teardown
    from som.train.model import BlankImagePass, build_model, forward_loss, text_hidden_size

    logging.basicConfig(level=logging.INFO)
    config = load_config(json.loads(sys.argv[1]))
    env = init_distributed(timeout_min=config.dist_timeout_min)
    from torch.distributed import distributed_c10d as c10d
    try:  # a private API: the gloo backend's options (torch 2.14)
        backend = c10d._get_default_group()._get_backend(torch.device("cpu"))
        timeout = backend.options._timeout
    except (AttributeError, RuntimeError):
        timeout = None
    ds = build_deepspeed_config(config, world_size=1, dtype=torch.float32,
                                hidden_size=text_hidden_size(config))
    built = build_model(config, ds_config=ds)
    params = dict(built.model.named_parameters())
    report = {
        "timeout_s": timeout.total_seconds() if timeout is not None else None,
        "params": len(params),
        "partitioned": sorted(n for n, p in params.items() if hasattr(p, "ds_id")
                              and p.ds_status.name == "NOT_AVAILABLE"),
        "local_numel": sum(p.numel() for p in params.values()),
        "full_numel": sum(getattr(p, "ds_numel", p.numel()) for p in params.values()),
        "vocab": int(getattr(built.model.get_input_embeddings().weight, "ds_shape", [-1])[0]),
        "whole": sorted(n for n, p in params.items() if not hasattr(p, "ds_id")),
        "tokenizer": len(built.processor.tokenizer),
    }
    import deepspeed
    llava = built.model.model
    weights = {"tower": llava.vision_tower.encoder.layers[1].mlp.fc1.weight,
               "lm": llava.language_model.layers[1].self_attn.q_proj.weight}
    with deepspeed.zero.GatheredParameters(list(weights.values())):
        report["sums"] = {k: float(w.double().sum()) for k, w in weights.items()}
    optimizer = torch.optim.AdamW([p for p in built.model.parameters() if p.requires_grad], lr=1e-3)
    engine, *_ = deepspeed.initialize(model=built.model, optimizer=optimizer, config=ds)
    blank = BlankImagePass(engine.module)
    from PIL import Image
    processor = built.processor
    image = dict(processor(images=Image.new("RGB", (40, 40), (9, 99, 199)),
                           text="USER: <image>\\nList. ASSISTANT: 1. dog", return_tensors="pt"))
    text = dict(processor.tokenizer("USER: Name one. ASSISTANT: cat", return_tensors="pt"))
    losses = []
    for batch in (image, text, image, text):
        batch["labels"] = batch["input_ids"].clone()
        loss = forward_loss(engine, batch, blank, env.device, torch.float32)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    report["losses"] = losses
    print("REPORT " + json.dumps(report), flush=True)
    teardown()
""")


@pytest.mark.slow
def test_zero3_builds_the_model_partitioned(parts, listing_data, tmp_path: Path) -> None:
    """1 process, gloo, DeepSpeed on the CPU: every weight is a ZeRO-3 partition from the
    moment it exists (the tower and the LM loaded by from_pretrained under zero.Init, the new
    projector under our zero.Init), the loaded values are intact, and it trains."""
    from transformers import CLIPVisionModel, LlamaForCausalLM

    values = {
        "vision_tower": parts.clip,
        "language_model": parts.lm,
        "local_files_only": True,
        "data_url": str(listing_data),
        "gradient_checkpointing": False,
        "zero_stage": 3,
        "global_batch_size": 1,
        "micro_batch_size": 1,
        "dist_timeout_min": 33,
    }
    script = tmp_path / "zero3.py"
    script.write_text(_ZERO3_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), json.dumps(values)],
        cwd=REPO_ROOT,
        env=training_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads(lines[0][len("REPORT ") :])
    assert report["timeout_s"] == 33 * 60  # the default group's own timeout (None: torch moved it)
    assert "collective timeout 33 min" in result.stderr
    assert report["whole"] == [] and len(report["partitioned"]) == report["params"]  # every weight
    assert report["local_numel"] == 0  # a world of 1 still keeps its shard out of param.data
    clip = CLIPVisionModel.from_pretrained(parts.clip)
    lm = LlamaForCausalLM.from_pretrained(parts.lm)
    projector = 32 * 64 + 64 + 64 * 64 + 64
    extra_rows = report["vocab"] - lm.config.vocab_size
    assert report["vocab"] == report["tokenizer"] and extra_rows == 1
    expected = (
        sum(p.numel() for p in clip.parameters())
        + sum(p.numel() for p in lm.parameters())
        + projector
        + extra_rows * 64 * 2
    )
    assert report["full_numel"] == expected
    assert report["sums"] == pytest.approx(
        {  # the pretrained values, loaded into the shards
            "tower": float(clip.encoder.layers[1].mlp.fc1.weight.double().sum()),
            "lm": float(lm.model.layers[1].self_attn.q_proj.weight.double().sum()),
        },
        rel=1e-6,
    )
    assert all(map(lambda x: x == x and abs(x) < 1e4, report["losses"]))
