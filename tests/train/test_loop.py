"""The training loop as real processes (`python -m som.train.entry`, DeepSpeed on CPU over
gloo): resume after a kill gives the uninterrupted losses, the two LLaVA stages chain through
their exports, object-storage run folders, LoRA under ZeRO-3, bad data; plus the run folder's
bookkeeping in this process."""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from som import storage
from som.train.checkpoints import Checkpoint, ResumeError, RunFolder, tag_for
from som.train.loop import lr_lambda
from som.train.metrics import MetricsLog
from tests.helpers.training import generate_listing, losses, read_log, start_ranks, wait_ranks, write_config

# ----------------------------------------------------------------------------- bookkeeping


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    cosine = lr_lambda("cosine", warmup_steps=3, total_steps=23)
    factors = [cosine(s) for s in range(23)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert factors[13] == pytest.approx(0.5) and cosine(23) == pytest.approx(0.0)
    assert lr_lambda("linear", 0, 10)(5) == pytest.approx(0.5)
    assert lr_lambda("constant", 2, 10)(9) == 1.0


def _fake_checkpoint(folder: RunFolder, step: int, complete: bool = True, **meta) -> None:
    (folder.checkpoints / tag_for(step)).mkdir(parents=True)
    (folder.checkpoints / tag_for(step) / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        folder.mark_complete(step, {"world_size": 2, "fingerprint": "abc", **meta})


def test_only_complete_checkpoints_count_and_the_last_k_are_kept(tmp_path: Path) -> None:
    folder = RunFolder(str(tmp_path / "run"))
    assert folder.latest() is None
    for step in (2, 4, 6):
        _fake_checkpoint(folder, step)
    _fake_checkpoint(folder, 8, complete=False)  # killed while saving
    assert folder.latest() == Checkpoint(6, {"step": 6, "world_size": 2, "fingerprint": "abc"})
    assert folder.prune(keep_last=2) == [2]
    assert sorted(p.name for p in folder.checkpoints.iterdir()) == [tag_for(4), tag_for(6), tag_for(8)]
    _fake_checkpoint(folder, 10)
    assert folder.prune(keep_last=1) == [4, 6, 8]
    assert [c.step for c in folder.complete()] == [10]


def test_resume_refuses_another_config_or_world_size(tmp_path: Path) -> None:
    folder = RunFolder(str(tmp_path / "run"))
    _fake_checkpoint(folder, 4)
    latest = folder.latest()
    folder.check_resumable(latest, "abc", 2)
    with pytest.raises(ResumeError, match="fingerprint abc, this config is xyz; use a new run_dir"):
        folder.check_resumable(latest, "xyz", 2)
    with pytest.raises(ResumeError, match="written by 2 processes, this run has 4"):
        folder.check_resumable(latest, "abc", 4)


def test_metrics_cut_back_to_the_checkpoint(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        log.append({"step": step, "loss": 1.0 / step, "lr": 0.1, "samples_per_s": 1.0, "tokens_per_s": 1.0})
    with log.path.open("a") as f:
        f.write('{"step": 6, "lo')  # torn by a kill
    log.truncate_after(3)
    assert [r["step"] for r in log.read()] == [1, 2, 3]


# ----------------------------------------------------------------------------- real runs


def _wait_for_checkpoint(run_dir: Path, step: int, procs, timeout: float = 120) -> None:
    marker = run_dir / "checkpoints" / tag_for(step) / "complete.json"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert all(p.poll() is None for p in procs), "training ended before the checkpoint"
        assert time.monotonic() < deadline, f"no checkpoint {step} after {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_killed_run_resumes_with_the_uninterrupted_losses(base_config, launch, tmp_path) -> None:
    config = {**base_config, "max_steps": 40, "save_every": 4, "keep_last": 2}
    reference = tmp_path / "reference"
    assert launch(config, str(reference), name="reference") == [0]

    run = tmp_path / "killed"
    logs = tmp_path / "logs-killed"
    logs.mkdir()
    path = write_config(config, tmp_path / "killed.yaml")
    procs = start_ranks(path, str(run), 1, logs)
    _wait_for_checkpoint(run, 8, procs)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(timeout=30)
    assert not (run / "summary.json").exists(), "the run finished before it was killed"
    assert wait_ranks(start_ranks(path, str(run), 1, logs), logs) == [0]

    log = (logs / "rank0.log").read_text()
    assert "resumed from" in log
    assert losses(run) == losses(reference)  # exactly, step for step
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # no step logged twice, none missing
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [tag_for(36), tag_for(40)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["final_loss"] < summary["first_loss"]
    assert summary["data_report"]["used"] == 20 and summary["export"] == str(run / "hf")
    generate_listing(run / "hf")

    # a finished run is not trained again
    assert wait_ranks(start_ranks(path, str(run), 1, logs), logs) == [0]
    assert "already finished; nothing to do" in (logs / "rank0.log").read_text()
    assert losses(run) == losses(reference)


@pytest.mark.slow
def test_pretrain_then_lora_finetune_from_its_export(base_config, launch, parts, listing_data, tmp_path) -> None:
    from transformers import CLIPVisionModel, LlamaForCausalLM, LlavaForConditionalGeneration

    pretrain = {
        **base_config,
        "stage": "pretrain",
        "data_url": str(listing_data.parent / "images.json"),
        "max_steps": 8,
        "global_batch_size": 4,
        "micro_batch_size": 4,
        "save_every": 100,
    }
    assert launch(pretrain, str(tmp_path / "stage1"), name="stage1") == [0], read_log(tmp_path, "stage1")
    stage1 = LlavaForConditionalGeneration.from_pretrained(tmp_path / "stage1" / "hf")
    assert stage1.config.vision_feature_layer == -2
    # stage 1 trains the projector alone: the tower and the language model are the parts'
    clip = CLIPVisionModel.from_pretrained(parts.clip)
    lm = LlamaForCausalLM.from_pretrained(parts.lm)
    assert torch.equal(
        stage1.model.vision_tower.encoder.layers[1].mlp.fc1.weight, clip.encoder.layers[1].mlp.fc1.weight
    )
    assert torch.equal(
        stage1.model.language_model.layers[1].self_attn.q_proj.weight, lm.model.layers[1].self_attn.q_proj.weight
    )
    # two epochs of the same 16 images: compare whole epochs, not two different batches
    stage1_losses = losses(tmp_path / "stage1")
    assert sum(stage1_losses[4:]) < sum(stage1_losses[:4]), stage1_losses

    finetune = {key: value for key, value in base_config.items() if key not in ("vision_tower", "language_model")}
    finetune.update(
        {
            "init_checkpoint": str(tmp_path / "stage1" / "hf"),
            "max_steps": 6,
            "lora": {"enabled": True, "rank": 4, "alpha": 8},
            "projector_lr": 1e-4,
        }
    )
    assert launch(finetune, str(tmp_path / "stage2"), name="stage2") == [0], read_log(tmp_path, "stage2")
    stage2 = LlavaForConditionalGeneration.from_pretrained(tmp_path / "stage2" / "hf")
    assert not any("lora" in name for name in stage2.state_dict())  # merged on export
    q = stage2.model.language_model.layers[1].self_attn.q_proj.weight
    assert not torch.equal(q, stage1.model.language_model.layers[1].self_attn.q_proj.weight)
    assert torch.equal(
        stage2.model.vision_tower.encoder.layers[1].mlp.fc1.weight, clip.encoder.layers[1].mlp.fc1.weight
    )
    assert "ASSISTANT:" in (tmp_path / "stage2" / "hf" / "chat_template.jinja").read_text()
    generate_listing(tmp_path / "stage2" / "hf")


@pytest.mark.slow
def test_lora_under_zero3_on_two_processes(base_config, launch, tmp_path) -> None:
    config = {
        **base_config,
        "zero_stage": 3,
        "max_steps": 6,
        "micro_batch_size": 2,
        "lora": {"enabled": True, "rank": 4, "alpha": 8},
        "lr": 3e-3,
    }
    codes = launch(config, str(tmp_path / "run"), world_size=2)
    summary_path = tmp_path / "run" / "summary.json"
    assert summary_path.exists(), read_log(tmp_path)
    assert codes == [0, 0], read_log(tmp_path)
    summary = json.loads(summary_path.read_text())
    assert summary["world_size"] == 2 and summary["final_loss"] < summary["first_loss"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in records] == [4] * 6  # the global batch, over 2 ranks
    assert all(math.isfinite(r["grad_norm"]) for r in records)
    generate_listing(tmp_path / "run" / "hf")


@pytest.mark.slow
def test_object_storage_run_folder_resumes_from_s3(base_config, launch, s3_server, s3_prefix, tmp_path) -> None:
    config = {**base_config, "max_steps": 6, "save_every": 2, "keep_last": 2}
    run_url = storage.join(s3_prefix, "run")
    options = s3_server.storage_options
    assert launch(config, run_url, name="first", env=s3_server.env) == [0], read_log(tmp_path, "first")
    summary = json.loads(storage.read_bytes(storage.join(run_url, "summary.json"), options))
    assert summary["steps"] == 6 and summary["export"] == storage.join(run_url, "hf")
    fs, root = storage.resolve(run_url, options)
    found = {p[len(root) + 1 :] for p in fs.find(root)}
    assert {
        "metrics.jsonl",
        "hf/model.safetensors",
        "hf/config.json",
        "hf/tokenizer.json",
        "checkpoints/step-00000004/complete.json",
        "checkpoints/step-00000006/complete.json",
        "checkpoints/step-00000006/rng_state_0.pt",
    } <= found
    assert not any(p.startswith("checkpoints/step-00000002") for p in found)  # keep_last 2

    def logged() -> list[float]:
        text = storage.read_bytes(storage.join(run_url, "metrics.jsonl"), options).decode()
        return [json.loads(line)["loss"] for line in text.splitlines()]

    first = logged()
    # as if the job died after its step-4 checkpoint and came back on another machine
    for name in ("summary.json", "hf", "checkpoints/step-00000006"):
        fs.rm(storage.resolve(storage.join(run_url, name), options)[1], recursive=True)
    shutil.rmtree(RunFolder(run_url).local)
    assert launch(config, run_url, name="resumed", env=s3_server.env) == [0], read_log(tmp_path, "resumed")
    assert "resumed from" in read_log(tmp_path, "resumed")
    assert logged() == first
    assert storage.exists(storage.join(run_url, "hf", "model.safetensors"), options)


@pytest.mark.slow
def test_bad_data_stops_the_run_with_a_report(base_config, launch, listing_data, tmp_path) -> None:
    records = json.loads(listing_data.read_text())
    records[3]["conversations"] = [{"from": "gpt", "value": "answer first"}]
    records[5]["conversations"][1]["value"] = ""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    codes = launch({**base_config, "data_url": str(bad)}, str(tmp_path / "run"))
    log = read_log(tmp_path)
    assert codes != [0]
    assert "training data rejected: 10.00% of records are bad" in log and "som-003" in log
    assert not (tmp_path / "run" / "summary.json").exists()
