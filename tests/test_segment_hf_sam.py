"""hf-sam: transformers' mask-generation pipeline on a tiny random SamModel loaded from a folder
through the registry, exactly as `som mark --segmenter hf-sam --param model=FOLDER` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from som.cli import cli
from som.segment import Mask, available, build_segmenter
from som.segment.hf_sam import HfSamParams, HfSamSegmenter
from tests.helpers.data import small_photo

# Thresholds off and NMS off: every (point, multimask output) pair survives, so counts are exact.
PERMISSIVE = {"points_per_side": "4", "pred_iou_thresh": "0", "stability_score_thresh": "0", "box_nms_thresh": "1.0"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A seeded tiny SamModel (128 px input, 32-wide ViT, 2 layers) and a matching processor."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 128,
            "patch_size": 16,
            "window_size": 4,
            "global_attn_indexes": [1],
            "num_pos_feats": 16,
            "mlp_dim": 64,
        },
        prompt_encoder_config={"hidden_size": 32, "image_size": 128, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
    )
    folder = tmp_path_factory.mktemp("tiny-sam")
    SamModel(config).save_pretrained(folder)
    SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": 128},
            pad_size={"height": 128, "width": 128},
            mask_size={"longest_edge": 32},
            mask_pad_size={"height": 32, "width": 32},
        )
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return small_photo("extreme_ironing.jpg", short_side=96)  # 96 x 144


def tiny(model_dir: Path, **overrides: str) -> HfSamSegmenter:
    """Built by name with string params, the way the CLI passes them."""
    params = {"model": str(model_dir), "local_files_only": "true", "device": "cpu", **PERMISSIVE, **overrides}
    segmenter = build_segmenter("hf-sam", params)
    assert isinstance(segmenter, HfSamSegmenter)
    return segmenter


def check_masks(masks: list[Mask], height: int, width: int) -> None:
    assert masks, "the mask-generation pipeline kept no mask"
    for mask in masks:
        assert isinstance(mask, Mask)
        assert (mask.height, mask.width) == (height, width)
        full = mask.full()
        assert mask.area == int(full.sum()) > 0
        rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
        # The crop is exactly the bounding box of the pixels, inside the image.
        assert (mask.y0, mask.x0) == (rows[0], cols[0])
        assert mask.crop.shape == (rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0])
        assert 0 <= mask.y0 and mask.y0 + mask.crop.shape[0] <= height
        assert 0 <= mask.x0 and mask.x0 + mask.crop.shape[1] <= width
        assert type(mask.score) is float and 0.0 <= mask.score <= 1.0
        assert mask.category is None


def test_params_from_cli_strings_are_typed(model_dir):
    """String params become the dataclass's types; the model is loaded once, at build time."""
    segmenter = tiny(model_dir, points_per_batch="16", autocast="bf16")
    assert segmenter.params == HfSamParams(
        model=str(model_dir),
        local_files_only=True,
        device="cpu",
        autocast="bf16",
        points_per_side=4,
        points_per_batch=16,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
    )
    assert type(segmenter.pipeline.model).__name__ == "SamModel"
    assert segmenter.pipeline.model.config.vision_config.hidden_size == 32


def test_generate_on_a_real_photo(model_dir, photo):
    """With filters off the pipeline keeps one mask per grid point and multimask output
    (4x4 points x 3), each a well-formed image-sized Mask; reruns give the same masks."""
    segmenter = tiny(model_dir)
    masks = segmenter.generate(photo, source="extreme_ironing.jpg")
    check_masks(masks, *photo.shape[:2])
    assert len(masks) == 4 * 4 * 3
    again = tiny(model_dir).generate(photo)
    assert [(m.area, m.x0, m.y0, m.score) for m in again] == [(m.area, m.x0, m.y0, m.score) for m in masks]


def test_points_and_nms_are_passed_through(model_dir, photo):
    """points_per_side sets the grid; box NMS removes the (overlapping) duplicates."""
    assert len(tiny(model_dir, points_per_side="2").generate(photo)) == 2 * 2 * 3
    deduplicated = tiny(model_dir, box_nms_thresh="0.7").generate(photo)
    check_masks(deduplicated, *photo.shape[:2])
    assert len(deduplicated) < 4 * 4 * 3


def test_thresholds_filter(model_dir, photo):
    """Impossible thresholds keep nothing; a middle IoU threshold keeps only the masks above it
    (the random model's IoU predictions are tiny, so the cut is taken from its own outputs)."""
    assert tiny(model_dir, pred_iou_thresh="1.01").generate(photo) == []
    assert tiny(model_dir, stability_score_thresh="1.01").generate(photo) == []
    scores = sorted(m.score for m in tiny(model_dir).generate(photo))
    cut = scores[len(scores) // 2]
    assert cut > 0.0  # the clamp at 0 would hide the comparison otherwise
    kept = tiny(model_dir, pred_iou_thresh=repr(cut)).generate(photo)
    assert 0 < len(kept) < len(scores)
    assert all(m.score > cut for m in kept)


def test_bf16_autocast_on_cpu(model_dir, photo):
    """autocast=bf16 runs the same pipeline and still yields float scores in [0, 1]."""
    check_masks(tiny(model_dir, autocast="bf16").generate(photo), *photo.shape[:2])


def test_bad_image_is_a_clear_error(model_dir, photo):
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB.*for x.png"):
        tiny(model_dir).generate(photo[..., 0], source="x.png")


def test_describe_records_name_and_params(model_dir):
    """describe() is JSON-able, records every knob, and keeps only a local folder's name."""
    description = tiny(model_dir, cache_dir="/private/cache").describe()
    assert description["name"] == "hf-sam"
    params = description["params"]
    assert params["model"] == model_dir.name
    assert "cache_dir" not in params
    assert params["points_per_side"] == 4 and params["box_nms_thresh"] == 1.0
    assert params["local_files_only"] is True
    assert json.loads(json.dumps(description)) == description


def test_uncached_model_offline_names_the_id(tmp_path):
    """Offline and not cached: a RuntimeError that names the model and the way out."""
    with pytest.raises(RuntimeError) as info:
        build_segmenter(
            "hf-sam",
            {"model": "facebook/sam-vit-huge", "local_files_only": "true", "cache_dir": str(tmp_path)},
        )
    assert "'facebook/sam-vit-huge'" in str(info.value)
    assert "local Hugging Face cache" in str(info.value)


def test_listed_by_the_registry_and_cli():
    """`som segmenters` lists hf-sam with its parameters."""
    assert "hf-sam" in available()
    result = CliRunner().invoke(cli, ["segmenters"])
    assert result.exit_code == 0, result.output
    assert "hf-sam:" in result.output
    section = result.output.split("hf-sam:", 1)[1]
    assert "model = 'facebook/sam-vit-base'" in section and "points_per_side = 32" in section


@pytest.mark.gpu
@pytest.mark.parametrize("autocast", ["none", "bf16", "fp16"])
def test_tiny_hf_sam_on_cuda(model_dir, photo, autocast):
    """On a GPU the model runs on CUDA, with and without half-precision autocast."""
    segmenter = tiny(model_dir, device="cuda", autocast=autocast)
    assert next(segmenter.pipeline.model.parameters()).is_cuda
    check_masks(segmenter.generate(photo), *photo.shape[:2])


@pytest.fixture
def half_precision_outputs(model_dir):
    """Make SamModel's forward return bf16/fp16 scores and masks, as it does under CUDA
    autocast, while the pipeline's NMS runs on the CPU outside any autocast region."""

    def install(segmenter: HfSamSegmenter, dtype: torch.dtype) -> None:
        def to_half(module, args, kwargs, output):
            output["iou_scores"] = output["iou_scores"].to(dtype)
            output["pred_masks"] = output["pred_masks"].to(dtype)
            return output

        segmenter.pipeline.model.register_forward_hook(to_half, with_kwargs=True)

    return install


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_model_outputs_survive_nms(model_dir, photo, half_precision_outputs, dtype):
    """Issue 16.1: half-precision IoU scores reached torchvision NMS next to float32 boxes
    ("dets should have the same type as scores"); they are now cast to float32 first."""
    segmenter = tiny(model_dir, box_nms_thresh="0.7")
    half_precision_outputs(segmenter, getattr(torch, dtype))
    masks = segmenter.generate(photo)
    check_masks(masks, *photo.shape[:2])
    assert len(masks) < 4 * 4 * 3  # NMS did run


def test_segmenter_pickles_into_a_fresh_process(model_dir, photo, monkeypatch):
    """`som mark` sends the segmenter to worker processes by pickle: the lazily built pipeline
    class must be found again by name in a process that has not built it yet."""
    import pickle

    import som.segment.hf_sam as hf_sam

    segmenter = tiny(model_dir)
    blob = pickle.dumps(segmenter)
    monkeypatch.delitem(vars(hf_sam), "Float32MaskGenerationPipeline")
    again = pickle.loads(blob)
    assert type(again.pipeline).__name__ == "Float32MaskGenerationPipeline"
    assert [m.area for m in again.generate(photo)] == [m.area for m in segmenter.generate(photo)]


@pytest.mark.parametrize("gpus", [0, 2])
@pytest.mark.parametrize("requested", ["0", "2"])
def test_som_mark_runs_hf_sam_in_one_process(model_dir, tmp_path, monkeypatch, gpus, requested):
    """Issue 16.4: `som mark --segmenter hf-sam` started one process per core (or per
    --workers), each loading its own model copy onto GPU 0; like sam it now runs one process."""
    import os

    import som.cli
    import som.mark.batch
    from som.mark.batch import MarkSummary

    seen: dict[str, int] = {}

    def fake_mark_paths(*args, workers: int = 1, **kwargs) -> MarkSummary:
        seen["workers"] = workers
        return MarkSummary()

    monkeypatch.setattr(som.mark.batch, "mark_paths", fake_mark_paths)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(som.cli, "_cuda_devices", lambda: gpus, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    result = CliRunner().invoke(
        cli,
        [
            "mark",
            str(image),
            "--out",
            str(tmp_path / "out"),
            "--segmenter",
            "hf-sam",
            "--param",
            f"model={model_dir}",
            "--param",
            "local_files_only=true",
            "--param",
            "device=cpu",
            "--workers",
            requested,
            "--no-progress",
        ],
    )
    assert seen == {"workers": 1}, result.output
