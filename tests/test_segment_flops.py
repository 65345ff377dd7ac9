"""som.segment.flops: SAM's encoder and decoder FLOPs against a hand count, against torch's
FLOP counter on tiny real models (segment-anything's and transformers'), and in a segmenter's
throughput line."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from som.mfu import format_flops
from som.segment.flops import SAM_SHAPES, SamShape, automatic_passes, segmenter_flops, throughput_line


def test_encoder_by_hand() -> None:
    """12 px image of 4 px patches: a 3 x 3 grid (n = 9), width 4, MLP 8, no relative positions.
    Block 0 attends in 2 x 2 windows over the grid padded to 4 x 4; block 1 is global."""
    shape = SamShape(
        embed_dim=4,
        depth=2,
        mlp_dim=8,
        global_layers=(1,),
        window_size=2,
        image_size=12,
        patch_size=4,
        rel_pos=False,
        out_chans=2,
    )
    patch_embed = 2 * 3 * 16 * 4 * 9
    windowed = 2 * 4 * 16 * 16 + 4 * 4 * 2**4 * 4 + 4 * 4 * 8 * 9  # projections over 16, 4 windows, MLP
    global_ = 2 * 4 * 16 * 9 + 4 * 4 * 81 + 4 * 4 * 8 * 9
    neck = 2 * 4 * 2 * 9 + 2 * 9 * 2 * 2 * 9
    assert shape.encoder_flops() == patch_embed + windowed + global_ + neck == 12072


def test_official_shapes() -> None:
    """ViT-H is the well-known ~3 TMAC encoder, ViT-B ~0.49 TMAC; the decoder is shared."""
    assert SAM_SHAPES["vit_h"].encoder_flops() / 2 == pytest.approx(2.98e12, rel=0.01)
    assert SAM_SHAPES["vit_b"].encoder_flops() / 2 == pytest.approx(0.486e12, rel=0.01)
    assert SAM_SHAPES["vit_b"].decoder_flops(1024) == SAM_SHAPES["vit_h"].decoder_flops(1024)


def test_automatic_passes() -> None:
    assert automatic_passes(32) == (1, 1024)
    assert automatic_passes(32, crop_n_layers=1, crop_n_points_downscale_factor=2) == (5, 1024 + 4 * 256)


@pytest.mark.parametrize("img_size", [128, 160])  # 160: windows pad the 10 x 10 grid to 12 x 12
def test_matches_torch_on_a_tiny_segment_anything_sam(img_size: int) -> None:

    from tests.helpers.tiny_sam import build_tiny_sam

    sam = build_tiny_sam(img_size=img_size)
    shape = SamShape.from_segment_anything(sam)
    assert (shape.depth, shape.global_layers, shape.window_size, shape.mask_tokens) == (2, (1,), 4, 4)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            embedding = sam.image_encoder(torch.randn(1, 3, img_size, img_size))
        assert counter.get_total_flops() == shape.encoder_flops()
        points = (torch.rand(5, 1, 2) * img_size, torch.ones(5, 1, dtype=torch.int))
        sparse, dense = sam.prompt_encoder(points=points, boxes=None, masks=None)
        image_pe = sam.prompt_encoder.get_dense_pe()  # positional encodings are not counted
        with FlopCounterMode(display=False) as counter:
            sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
        assert counter.get_total_flops() == shape.decoder_flops(5)


def test_matches_torch_on_a_tiny_transformers_sam() -> None:
    """transformers' SamModel: the encoder exactly; the decoder within the point and image
    positional encodings it computes inside the same call (left out of the count)."""
    from transformers import SamConfig, SamModel

    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 160,
            "patch_size": 16,
            "window_size": 4,
            "global_attn_indexes": [1],
            "num_pos_feats": 16,
            "mlp_dim": 64,
        },
        prompt_encoder_config={"hidden_size": 32, "image_size": 160, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = SamModel(config).eval()
    shape = SamShape.from_hf_config(config)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        embedding = model.get_image_embeddings(torch.randn(1, 3, 160, 160))
    assert counter.get_total_flops() == shape.encoder_flops()
    points, labels = torch.rand(1, 5, 1, 2) * 160, torch.ones(1, 5, 1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:  # transformers' hooks need grad mode here
        model(image_embeddings=embedding, input_points=points, input_labels=labels, multimask_output=True)
    positional = 2 * 100 * 2 * 16 + 5 * 2 * 2 * 2 * 16  # image grid + 2 tokens per prompt, 2 -> 16 features
    assert counter.get_total_flops() == shape.decoder_flops(5) + positional


def test_segmenter_flops_and_throughput_line() -> None:

    from som.segment.sam import SamParams, SamSegmenter
    from som.segment.superpixel import SlicParams, SlicSegmenter
    from tests.helpers.tiny_sam import build_tiny_sam

    sam = SamSegmenter(SamParams(device="cpu", points_per_side=8), model=build_tiny_sam())
    flops = segmenter_flops(sam)
    shape = SamShape.from_segment_anything(sam.generator.predictor.model)
    assert flops is not None
    assert (flops.encoder, flops.decoder) == (shape.encoder_flops(), shape.decoder_flops(64))
    line = throughput_line(sam, 4, 2.0)
    assert line == (
        f"sam: 4 images in 2.0 s (2.00 images/s), {format_flops(flops.total)}/image "
        f"(encoder {format_flops(flops.encoder)}, decoder {format_flops(flops.decoder)})"
    )
    assert "peak" not in line  # on the CPU
    slic = SlicSegmenter(SlicParams())
    assert segmenter_flops(slic) is None
    assert throughput_line(slic, 3, 1.5) == "slic: 3 images in 1.5 s (2.00 images/s)"
