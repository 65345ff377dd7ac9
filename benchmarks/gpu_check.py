"""One-GPU check of everything that only runs on CUDA, in under 10 minutes, as one table.

    python benchmarks/gpu_check.py            # on a machine with a GPU
    python benchmarks/gpu_check.py --dry-run  # CPU parts only (automatic without CUDA), < 60 s

Rows: the CUDA tests (``pytest -m gpu``); ``sam`` and ``hf-sam`` in fp32 / tf32 / bf16 / fp16
on 8 real photos with random weights of the real ViT-B shape (masks compared with strict fp32,
images/s); a one-GPU ZeRO-2 and ZeRO-3 tiny LLaVA run (loss decreasing, resume exact, export
loads; built as tests/train builds them); batched vs one-by-one bf16 answers of a tiny LLaVA
(som.eval.models); peak GPU memory of each in-process row. Nothing here has been run on a GPU
yet (written in a session without one): expect to fix the first run, then record the numbers.

Why random weights: the check is about precision paths and throughput, which depend on the
architecture's shape, not on trained values; no checkpoint download is needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("gpu_check")
NO_CUDA = "skipped: no CUDA"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_IOU_TOLERANCE = 0.9  # mean best IoU of a precision's masks against strict fp32's


@dataclass
class Row:
    check: str
    status: str  # ok | FAIL | skipped: ...
    detail: str = ""
    peak_mib: float | None = None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _peak_reset() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def photos(count: int = 8) -> list[Path]:
    """Real photos from tests/data and ../shared/reference/images (logos left out)."""
    roots = [REPO / "tests" / "data", REPO.parent / "shared" / "reference" / "images"]
    found = sorted(
        {
            p.resolve()
            for root in roots
            if root.is_dir()
            for p in root.rglob("*")
            if p.suffix.lower() in PHOTO_SUFFIXES and "logo" not in p.name
        }
    )
    return found[:count]


# ----------------------------------------------------------------------------- rows


def environment() -> Row:
    import torch

    from som import devices

    if not torch.cuda.is_available():
        return Row("environment", "ok", f"torch {torch.__version__}, no CUDA device")
    name = torch.cuda.get_device_name()
    capability = devices.compute_capability("cuda")
    return Row(
        "environment",
        "ok",
        f"torch {torch.__version__}, {name}, capability {capability}, "
        f"native bf16 {devices.native_bf16('cuda')}, auto train dtype "
        f"{devices.auto_dtype('cuda')}",
    )


def gpu_tests(dry_run: bool) -> Row:
    """``pytest -m gpu``: on CPU they all skip; collect-only in a dry run."""
    args = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    if dry_run:
        args.append("--collect-only")
    try:
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        return Row("pytest -m gpu", "FAIL", "timed out after 240 s")
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    ok = done.returncode in (0, 5)  # 5: no test selected
    return Row("pytest -m gpu" + (" (collected)" if dry_run else ""), "ok" if ok else "FAIL", summary)


def _mask_agreement(reference: list[Any], other: list[Any]) -> float:
    """Mean over the reference masks of the best IoU with any of `other`'s (1.0 = identical)."""
    import numpy as np

    if not reference:
        return 1.0 if not other else 0.0
    others = [m.full() for m in other]
    scores = []
    for mask in reference:
        full = mask.full()
        best = 0.0
        for candidate in others:
            union = np.logical_or(full, candidate).sum()
            best = max(best, float(np.logical_and(full, candidate).sum() / union) if union else 1.0)
        scores.append(best)
    return float(np.mean(scores))


def _segment_rows(name: str, make: Callable[[str], Any], images: list[Any]) -> list[Row]:
    """fp32 (TF32 off) as the reference, then tf32, bf16 and fp16 against it; images/s, the
    analytic FLOPs per image (som.segment.flops) and the share of the GPU's dense bf16 peak."""
    import torch

    from som.mfu import device_peak_flops, format_flops, utilization
    from som.segment.flops import segmenter_flops

    rows = []
    reference: list[list[Any]] = []
    for mode in ("fp32", "tf32", "bf16", "fp16"):
        _peak_reset()
        segmenter = make("none" if mode in ("fp32", "tf32") else mode)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
        start = time.perf_counter()
        try:
            masks = [segmenter.generate(image) for image in images]
        except Exception as exc:  # noqa: BLE001 - a failing precision is a row, not the end
            rows.append(Row(f"{name} {mode}", "FAIL", f"{type(exc).__name__}: {exc}"[:200], _peak()))
            continue
        seconds = time.perf_counter() - start
        if mode == "fp32":
            reference = masks
            agreement = 1.0
        else:
            agreement = min(_mask_agreement(r, m) for r, m in zip(reference, masks, strict=False))
        status = "ok" if agreement >= MASK_IOU_TOLERANCE else "FAIL"
        flops = segmenter_flops(segmenter)
        assert flops is not None  # sam and hf-sam
        share = utilization(flops.total * len(images), seconds, device_peak_flops("cuda"))
        peak = "–" if share is None else f"{100 * share:.1f}%"
        rows.append(
            Row(
                f"{name} {mode}",
                status,
                f"{len(images) / seconds:.2f} images/s, {format_flops(flops.total)}/image, "
                f"{peak} of bf16 peak, {sum(map(len, masks))} masks, "
                f"worst image mean IoU vs fp32 {agreement:.3f} (tolerance "
                f"{MASK_IOU_TOLERANCE})",
                _peak(),
            )
        )
        del segmenter
        torch.cuda.empty_cache()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return rows


def segmenters(dry_run: bool) -> list[Row]:
    names = [f"{n} {m}" for n in ("sam", "hf-sam") for m in ("fp32", "tf32", "bf16", "fp16")]
    if dry_run:
        return [Row(name, NO_CUDA) for name in names]
    import numpy as np
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB")) for p in photos()]
    knobs = {
        "points_per_side": 16,
        "points_per_batch": 64,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }  # random weights: keep every mask to compare
    rows: list[Row] = []
    try:
        import torch
        from segment_anything import sam_model_registry

        from som.segment.sam import SamParams, SamSegmenter

        torch.manual_seed(0)
        sam = sam_model_registry["vit_b"](checkpoint=None)  # real ViT-B shape, random weights
        rows += _segment_rows(
            "sam",
            lambda autocast: SamSegmenter(
                SamParams(model_type="vit_b", device="cuda", autocast=autocast, **knobs), model=sam
            ),
            images,
        )
    except ImportError as exc:
        rows += [Row(n, f"skipped: {exc}") for n in names[:4]]
    folder = Path(tempfile.mkdtemp(prefix="hf-sam-"))
    try:
        import torch
        from transformers import SamConfig, SamModel

        from som.segment.hf_sam import HfSamParams, HfSamSegmenter

        torch.manual_seed(0)
        SamModel(SamConfig()).save_pretrained(folder)  # SamConfig() is ViT-B
        from transformers import SamImageProcessor

        SamImageProcessor().save_pretrained(folder)
        rows += _segment_rows(
            "hf-sam",
            lambda autocast: HfSamSegmenter(
                HfSamParams(model=str(folder), local_files_only=True, device="cuda", autocast=autocast, **knobs)
            ),
            images,
        )
    except Exception as exc:  # noqa: BLE001
        rows += [Row(n, "FAIL", f"{type(exc).__name__}: {exc}"[:200]) for n in names[4:]]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def _train(config: dict[str, Any], run_dir: Path, log_path: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    path = run_dir.parent / f"{run_dir.name}.json"
    path.write_text(json.dumps(config))  # JSON is YAML
    with log_path.open("ab") as out:
        return subprocess.run(
            [sys.executable, "-m", "som.train.entry", "--config", str(path), "--run-dir", str(run_dir)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        ).returncode


def training(dry_run: bool) -> list[Row]:
    """A tiny LLaVA from parts on one GPU, ZeRO-2 and ZeRO-3, bf16 (auto): 8 steps, then the
    last checkpoint removed and resumed: the losses must be the same, the export must load."""
    if dry_run:
        return [Row(f"train ZeRO-{s} tiny LLaVA", NO_CUDA) for s in (2, 3)]
    from tests.helpers.tiny_clip import build_tiny_clip
    from tests.helpers.tiny_train import build_tiny_lm, make_listing_dataset

    rows = []
    root = Path(tempfile.mkdtemp(prefix="gpu-train-"))
    try:
        clip, lm = build_tiny_clip(root / "clip"), build_tiny_lm(root / "lm")
        data = make_listing_dataset(root / "data", count=16)
        for stage in (2, 3):
            run = root / f"zero{stage}"
            config = {
                "stage": "finetune",
                "vision_tower": clip,
                "language_model": lm,
                "local_files_only": True,
                "data_url": str(data),
                "image_root": str(data.parent),
                "zero_stage": stage,
                "global_batch_size": 4,
                "micro_batch_size": 2,
                "max_length": 256,
                "lr": 1e-3,
                "save_every": 4,
                "keep_last": 2,
                "dataloader_workers": 0,
                "max_steps": 8,
            }
            logs = root / f"zero{stage}.log"
            start = time.perf_counter()
            code = _train(config, run, logs)
            if code != 0:
                rows.append(Row(f"train ZeRO-{stage} tiny LLaVA", "FAIL", f"exit {code}: {logs.read_text()[-300:]}"))
                continue
            records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            first = [r["loss"] for r in records]
            accounting = _step_accounting(records)
            (run / "summary.json").unlink(missing_ok=True)  # as if killed after step 4's save
            for name in ("hf", "checkpoints/step-00000008"):
                shutil.rmtree(run / name, ignore_errors=True)
            code = _train(config, run, logs)
            again = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
            problems = []
            if code != 0:
                problems.append(f"resume exit {code}")
            if not sum(first[4:]) < sum(first[:4]):
                problems.append(f"loss not decreasing {first}")
            if again != first:
                problems.append(f"resume differs: {first[4:]} vs {again[4:]}")
            try:
                from transformers import LlavaForConditionalGeneration

                LlavaForConditionalGeneration.from_pretrained(run / "hf")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"export does not load: {exc}")
            rows.append(
                Row(
                    f"train ZeRO-{stage} tiny LLaVA",
                    "FAIL" if problems else "ok",
                    "; ".join(problems)
                    or f"loss {first[0]:.3f} -> {first[-1]:.3f}, "
                    f"resume exact, export loads, {accounting}, {time.perf_counter() - start:.0f} s",
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _step_accounting(records: list[dict[str, Any]]) -> str:
    """Median FLOPs per step and the run's MFU (time-weighted; "–" without a known peak), from
    the loop's own metrics (som.train.flops, som.mfu)."""
    import statistics

    from som.mfu import format_flops
    from som.train.metrics import summarize

    mfu = summarize(records, wall_time_s=0.0)["mfu"]
    flops = format_flops(statistics.median(r["flops_per_step"] for r in records))
    return f"{flops}/step, MFU {'–' if mfu is None else f'{100 * mfu:.1f}%'}"


def evaluation(dry_run: bool) -> Row:
    """Batched vs one-by-one answers of a tiny LLaVA: bf16 on the GPU, fp32 in a dry run."""
    import io

    from PIL import Image

    from som.eval.models import load_model
    from som.eval.profiles import Question
    from tests.helpers.tiny_llava import build_tiny_llava

    cuda = not dry_run
    folder = Path(tempfile.mkdtemp(prefix="tiny-llava-"))
    try:
        build_tiny_llava(folder)
        questions = []
        for k, path in enumerate(photos(4)):
            buffer = io.BytesIO()
            Image.open(path).convert("RGB").resize((64, 48)).save(buffer, format="PNG")
            questions.append(Question(image=buffer.getvalue(), prompt=f"What is in photo {k}?" * (k + 1), id=f"q{k}"))
        questions.append(Question(image=None, prompt="Say something.", id="text"))
        kwargs = {
            "device": "cuda" if cuda else "cpu",
            "dtype": "bfloat16" if cuda else "float32",
            "max_new_tokens": 8,
            "local_files_only": True,
        }
        _peak_reset()
        batched = load_model(str(folder), batch_size=8, **kwargs).answer(questions)
        single = load_model(str(folder), batch_size=1, **kwargs).answer(questions)
        differ = [q.id for q, a, b in zip(questions, batched, single, strict=False) if a != b]
        name = f"eval batched vs single ({'bf16' if cuda else 'fp32, CPU'})"
        # bf16 left padding may change a greedy token; report, do not fail the table for it
        status = "ok" if not differ or cuda else "FAIL"
        return Row(
            name, status, f"{len(questions)} questions, {len(differ)} differ {differ}", _peak() if cuda else None
        )
    except Exception as exc:  # noqa: BLE001
        return Row("eval batched vs single", "FAIL", f"{type(exc).__name__}: {exc}"[:200])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cluster(dry_run: bool) -> Row:
    """A LocalCUDACluster check, owned by tasks/cluster.py: run its function when it exists."""
    try:
        from tasks import cluster as tasks_cluster
    except Exception as exc:  # noqa: BLE001
        return Row("LocalCUDACluster", f"skipped: tasks.cluster not importable ({type(exc).__name__})")
    check = getattr(tasks_cluster, "gpu_check", None)
    if check is None:
        return Row("LocalCUDACluster", "skipped: tasks.cluster has no gpu_check()")
    if dry_run:
        return Row("LocalCUDACluster", NO_CUDA)
    try:
        return Row("LocalCUDACluster", "ok", str(check())[:200])
    except Exception as exc:  # noqa: BLE001
        return Row("LocalCUDACluster", "FAIL", f"{type(exc).__name__}: {exc}"[:200])


# ----------------------------------------------------------------------------- table


def table(rows: list[Row]) -> str:
    """A fixed-width text table: check | status | peak MiB | detail."""
    header = ("check", "status", "peak MiB", "detail")
    cells = [(r.check, r.status, "" if r.peak_mib is None else f"{r.peak_mib:.0f}", r.detail) for r in rows]
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) for i in range(3)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header[:3], widths, strict=False)) + " | " + header[3]]
    lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 6)
    lines += [" | ".join(c.ljust(w) for c, w in zip(cell[:3], widths, strict=True)) + " | " + cell[3] for cell in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU parts only (the default without CUDA)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    dry_run = args.dry_run or not _cuda()
    started = time.perf_counter()
    rows = [environment(), gpu_tests(dry_run)]
    rows += segmenters(dry_run)
    rows += training(dry_run)
    rows += [evaluation(dry_run), cluster(dry_run)]
    print(table(rows))
    print(f"\n{'dry run' if dry_run else 'GPU run'} in {time.perf_counter() - started:.0f} s")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
