"""The training loop of one process: model, data, DeepSpeed engine, optimizer steps, metrics,
checkpoints, resume and export. `train` is what every rank of a job runs (`som.train.entry`
wraps it for Slurm and launchers).

Resuming gives the losses an uninterrupted run logs, step for step: the sampler's order is a
function of (seed, epoch) alone, so the micro-batches a checkpoint has consumed are skipped by
position (without loading them); DeepSpeed restores weights, optimizer and learning-rate
schedule; each rank restores its RNG state.

Steps are counted in optimizer steps; one step is `global_batch_size` samples over all ranks
(`micro_batch_size` per forward, gradient accumulation making up the rest). Each logged step
carries its model FLOPs (`som.train.flops`) and, on a GPU of known peak, its MFU (`som.mfu`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from som import storage
from som.mfu import device_peak_flops
from som.train import checkpoints as ck
from som.train.config import TrainConfig, gradient_accumulation_steps
from som.train.distributed import DistEnv, barrier
from som.train.flops import LlavaFlops
from som.train.metrics import MetricsLog, step_record, summarize

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a dataset smaller than one batch, ...)."""


@dataclass
class TrainResult:
    """What a finished run left: the exported model and the summary."""

    export: str
    summary: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers


def _broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (so all ranks act on one view of the run folder)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Any:
    """Multiplier of the base lr at each step: linear warm-up, then cosine/linear decay to 0
    (the HF Trainer schedules LLaVA uses) or constant."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1) if warmup_steps else 1.0
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


def finished(folder: ck.RunFolder, fingerprint: str) -> dict[str, Any] | None:
    """The summary of a run that already completed with this config, else None."""
    url = folder.url(ck.SUMMARY)
    if not storage.exists(url):
        return None
    summary = json.loads(storage.read_bytes(url))
    if summary.get("fingerprint") != fingerprint:
        raise ck.ResumeError(
            f"{folder.run_dir} holds a finished run of another config "
            f"(fingerprint {summary.get('fingerprint')}, this one {fingerprint}); "
            "use a new run_dir"
        )
    return summary


# ----------------------------------------------------------------------------- data


class _SkipBadSamples(torch.utils.data.Dataset):
    """Samples whose image turns out unreadable at load time (`SampleError`) become None and
    are left out of their batch, logged by id, instead of killing a long run."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        from som.train.data import SampleError

        try:
            return self.dataset[index]
        except SampleError as exc:
            log.warning("skipping sample at load time: %s", exc)
            return None


class _Collate:
    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, batch: list[Any]) -> dict[str, Any]:
        good = [sample for sample in batch if sample is not None]
        if not good:
            raise TrainingError("every sample of a micro-batch failed to load; see the warnings")
        return self.collator(good)


def build_data(config: TrainConfig, processor: Any, env: DistEnv) -> tuple[Any, Any, dict[str, Any]]:
    """The validated dataset, its collator and the data report. Rank 0 tokenizes the whole
    file once and sends the result to the other ranks, which would otherwise all do the same
    work at once (minutes for LLaVA's 665k mix, on CPUs the data loaders need)."""
    from som.train.data import SupervisedCollator, SupervisedDataset

    dataset = SupervisedDataset.from_url(
        config.data_url,
        processor,
        image_root=config.image_root,
        template=config.template,
        max_length=config.max_length,
        pad_to_square=config.pad_to_square,
    )
    scan = _broadcast(dataset.scan() if env.rank == 0 else None)
    report = dataset.apply_scan(scan, config.max_error_fraction).as_dict()
    return dataset, SupervisedCollator(processor.tokenizer.pad_token_id), report


def make_sampler(config: TrainConfig, dataset: Any, env: DistEnv) -> Any:
    from som.train.sampler import ModalityLengthGroupedSampler

    return ModalityLengthGroupedSampler(
        dataset.modality_lengths,
        batch_size=config.micro_batch_size,
        world_size=env.world_size,
        rank=env.rank,
        seed=config.seed,
        group_by_modality=config.group_by_modality_length,
    )


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """One rank's training run; `run()` trains (resuming when the run folder allows) and
    exports. Made and used once per process."""

    def __init__(self, config: TrainConfig, run_dir: str, env: DistEnv) -> None:
        self.config = config
        self.env = env
        self.folder = ck.RunFolder(run_dir)
        self.fingerprint = config.fingerprint()
        self.metrics = MetricsLog(self.folder.metrics_path)
        self.grad_accum = gradient_accumulation_steps(config, env.world_size)

    # ------------------------------------------------------------------ set-up

    def _setup(self) -> None:
        import deepspeed

        from som.train.deepspeed_config import build_deepspeed_config, resolve_precision
        from som.train.model import BlankImagePass, build_model, param_groups, text_hidden_size

        config, env = self.config, self.env
        self.dtype = resolve_precision(config, env.device)
        # The DeepSpeed config comes first: under ZeRO-3 the model is built partitioned with it.
        ds_config = build_deepspeed_config(
            config, world_size=env.world_size, dtype=self.dtype, hidden_size=text_hidden_size(config)
        )
        built = build_model(config, dtype=self.dtype, ds_config=ds_config)
        self._zero3_config = built.zero3_config  # transformers holds it weakly: keep it alive
        self.processor = built.processor
        self.flops = LlavaFlops.from_config(built.model.config, config.trainable, config.lora.enabled)
        self.peak_flops = device_peak_flops(env.device)
        self.dataset, collator, self.data_report = build_data(config, built.processor, env)
        self.collate = _Collate(collator)
        self.sampler = make_sampler(config, self.dataset, env)
        self.steps_per_epoch = self.sampler.batches_per_epoch // self.grad_accum
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"{len(self.dataset)} usable samples give no full optimizer step of "
                f"{config.global_batch_size} samples; lower global_batch_size or add data"
            )
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        warmup = math.ceil(config.warmup_ratio * self.total_steps)
        optimizer = torch.optim.AdamW(param_groups(built.model, config), lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
        schedule = lr_lambda(config.schedule, warmup, self.total_steps)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=built.model,
            optimizer=optimizer,
            config=ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        )
        self.blank_pass = BlankImagePass(self.engine.module)  # after DeepSpeed's hooks
        log.info(
            "%d steps (%d per epoch), %d micro-batches of %d per step per rank, world %d, %s, ZeRO-%d",
            self.total_steps,
            self.steps_per_epoch,
            self.grad_accum,
            config.micro_batch_size,
            env.world_size,
            self.dtype,
            config.zero_stage,
        )

    def _resume(self) -> int:
        """Load the latest complete checkpoint, if any; returns the step to continue from."""
        latest = _broadcast(self.folder.latest() if self.env.is_main else None)
        if latest is None:
            if self.env.is_main:
                self.folder.pull_metrics()
                self.metrics.truncate_after(0)
            return 0
        self.folder.check_resumable(latest, self.fingerprint, self.env.world_size)
        if self.env.local_rank == 0:
            self.folder.download(latest)
        barrier()
        path, _ = self.engine.load_checkpoint(str(self.folder.checkpoints), tag=latest.tag, load_module_strict=False)
        if path is None:
            raise ck.ResumeError(f"DeepSpeed could not load {self.folder.checkpoints / latest.tag}")
        self.folder.load_rng(latest.tag, self.env.rank)
        if self.env.is_main:
            self.folder.pull_metrics()
            self.metrics.truncate_after(latest.step)
        log.info("resumed from %s at step %d", self.folder.url(ck.CHECKPOINTS, latest.tag), latest.step)
        return latest.step

    # ------------------------------------------------------------------ steps

    def _loader(self, epoch: int, skip_steps: int) -> Any:
        """This rank's micro-batches of `epoch` after the first `skip_steps` optimizer steps
        (skipped by position, not loaded)."""
        self.sampler.set_epoch(epoch, skip_batches=skip_steps * self.grad_accum)
        return torch.utils.data.DataLoader(
            _SkipBadSamples(self.dataset),
            batch_sampler=self.sampler,
            collate_fn=self.collate,
            num_workers=self.config.dataloader_workers,
            pin_memory=self.env.device.type == "cuda",
        )

    def _forward(self, batch: dict[str, Any]) -> torch.Tensor:
        from som.train.model import forward_loss

        return forward_loss(self.engine, batch, self.blank_pass, self.env.device, self.dtype)

    def _step(self, micro_batches: Any) -> tuple[float, int, int, int, int]:
        """One optimizer step; returns this rank's (mean loss, samples, tokens, sum of squared
        sequence lengths, images): the last three are what the step's FLOPs depend on."""
        losses, samples, tokens, squares, images = [], 0, 0, 0, 0
        for _ in range(self.grad_accum):
            batch = next(micro_batches)
            loss = self._forward(batch)
            self.engine.backward(loss)
            self.engine.step()
            losses.append(loss.item())
            samples += len(batch["ids"])
            lengths = batch["attention_mask"].sum(dim=1)
            tokens += int(lengths.sum())
            squares += int((lengths * lengths).sum())
            images += len(batch["pixel_values"]) if "pixel_values" in batch else 0
        return sum(losses) / len(losses), samples, tokens, squares, images

    def _save(self, step: int, epoch: int) -> None:
        tag = ck.tag_for(step)
        self.engine.save_checkpoint(
            str(self.folder.checkpoints), tag=tag, save_latest=False, exclude_frozen_parameters=True
        )
        self.folder.save_rng(tag, self.env.rank)
        barrier()
        if self.env.local_rank == 0:
            self.folder.upload(tag)
        barrier()
        if self.env.is_main:
            self.folder.push_metrics()
            self.folder.mark_complete(
                step, {"epoch": epoch, "world_size": self.env.world_size, "fingerprint": self.fingerprint}
            )
            self.folder.prune(self.config.keep_last)
        barrier()
        log.info("checkpoint %s saved", tag)

    # ------------------------------------------------------------------ run

    def run(self) -> TrainResult:
        started = time.monotonic()
        done = _broadcast(finished(self.folder, self.fingerprint) if self.env.is_main else None)
        if done is not None:
            log.info("%s already finished; nothing to do", self.folder.run_dir)
            return TrainResult(export=done["export"], summary=done)
        self._setup()
        step = start = self._resume()
        self.engine.train()
        last_saved = start
        while step < self.total_steps:
            epoch, offset = divmod(step, self.steps_per_epoch)
            micro_batches = iter(self._loader(epoch, offset))
            for _ in range(offset, self.steps_per_epoch):
                if step >= self.total_steps:
                    break
                clock = time.perf_counter()
                lr = self.scheduler.get_last_lr()[0]
                loss, *counts = self._step(micro_batches)
                loss_sum, samples, tokens, squares, images = _sum_across_ranks([loss, *counts], self.env.device)
                loss = loss_sum / self.env.world_size
                step += 1
                if not math.isfinite(loss):
                    raise TrainingError(f"loss is {loss} at step {step}; the last checkpoint is step {last_saved}")
                grad_norm = self.engine.get_global_grad_norm()
                if self.env.is_main and (step % self.config.log_every == 0 or step == self.total_steps):
                    self.metrics.append(
                        step_record(
                            step=step,
                            epoch=epoch,
                            loss=loss,
                            lr=lr,
                            grad_norm=None if grad_norm is None else float(grad_norm),
                            samples=int(samples),
                            tokens=int(tokens),
                            seconds=time.perf_counter() - clock,
                            flops=self.flops.step_flops(tokens, squares, images),
                            peak_flops=self.peak_flops,
                            devices=self.env.world_size,
                        )
                    )
                if step % self.config.save_every == 0 or step == self.total_steps:
                    self._save(step, epoch)
                    last_saved = step
        return self._finish(start, time.monotonic() - started)

    def _finish(self, start: int, seconds: float) -> TrainResult:
        from som.train import export

        export_url = self.folder.url(ck.EXPORT)
        state = export.full_state_dict(self.engine)
        summary: dict[str, Any] = {}
        if self.env.is_main:
            assert state is not None  # full_state_dict gathers the weights on rank 0
            lora = self.config.lora
            local = self.folder.local / ck.EXPORT
            export.write_export(
                self.engine.module,
                state,
                self.processor,
                local,
                lora_scaling=lora.alpha / lora.rank if lora.enabled else None,
                template=self.config.template,
            )
            if self.folder.remote:
                export.upload_folder(local, export_url)
            self.folder.push_metrics()
            summary = summarize(
                self.metrics.read(),
                wall_time_s=seconds,
                resumed_from_step=start,
                world_size=self.env.world_size,
                data_report=self.data_report,
                fingerprint=self.fingerprint,
                export=export_url,
                config=self.config.to_dict(),
            )
            storage.write_bytes_atomic(self.folder.url(ck.SUMMARY), json.dumps(summary, indent=1).encode())
            log.info(
                "training done: %d steps, loss %.4f -> %.4f, %.1f samples/s; model in %s",
                summary["steps"],
                summary["first_loss"],
                summary["final_loss"],
                summary["samples_per_s"] or 0.0,
                export_url,
            )
        barrier()
        return TrainResult(export=export_url, summary=_broadcast(summary))


def train(config: TrainConfig, run_dir: str, env: DistEnv) -> TrainResult:
    """Train (or resume, or find already finished) the run of `config` in `run_dir` on this
    rank. Every rank of the job calls it with the same arguments."""
    return Trainer(config, run_dir, env).run()
