"""Analytic FLOPs of Segment Anything's automatic mask generation, from the model's shape.

Why: images/s alone does not say whether a GPU is busy; FLOPs per image over the device's peak
(`som.mfu`) does, and it separates the two halves of the cost. The image encoder runs once per
image (per crop); the mask decoder runs once per point of the grid (points_per_side² of them),
each time over the whole image embedding, so at the default 32 x 32 points it costs about as
much as the ViT-H encoder.

What is counted (as nanoGPT counts): every matmul, convolution and attention product, 2 FLOPs
per multiply-add; norms, activations, softmax and the point encodings are left out.
For an image of g x g patches (g = image_size / patch_size, n = g² tokens) of width D:

- encoder: patch embedding 2·(3·p²·D)·n; per block, attention projections 2·4·D²·n_a with
  n_a the tokens it attends over (windowed blocks pad the grid to a multiple of the window w
  and attend within (g_pad/w)² windows of w² tokens: n_a = g_pad²), scores 4·D·w⁴ per window
  (global blocks: 4·D·n²), relative positions 2·D·n_a·2w (global: 2·D·n·2g), MLP 4·D·M·n;
  neck 2·D·C·n + 2·9·C²·n (C = out_chans).
- decoder, per prompt (k = 1 IoU + mask tokens + 2 point tokens, C its width, c = C / the
  attention downsample rate, m the MLP width): per two-way layer, token self-attention
  8·k·C² + 4·k²·C, token-to-image and image-to-token attention 2·(4·n·C·c + 4·k·C·c + 4·k·n·c),
  MLP 4·k·C·m; the final token-to-image attention once more; upscaling 2·C·(C/4)·4·n +
  2·(C/4)·(C/8)·4·4n; hypernetwork MLPs, the mask product 2·tokens·(C/8)·16n and the IoU head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from som.mfu import device_peak_flops, format_flops, utilization

POINT_TOKENS = 2  # a point prompt without a box is padded with one "not a point" token


@dataclass(frozen=True)
class SamShape:
    """What SAM's FLOPs depend on: the ViT image encoder's and the mask decoder's sizes."""

    embed_dim: int
    depth: int
    mlp_dim: int
    global_layers: tuple[int, ...]
    window_size: int = 14
    image_size: int = 1024
    patch_size: int = 16
    rel_pos: bool = True
    out_chans: int = 256
    decoder_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    attention_downsample: int = 2
    mask_tokens: int = 4
    iou_head_depth: int = 3
    iou_head_hidden: int = 256

    @classmethod
    def from_segment_anything(cls, sam: Any) -> SamShape:
        """The shape of a built `segment_anything.modeling.Sam` (any size, a test's tiny one too)."""
        encoder, decoder = sam.image_encoder, sam.mask_decoder
        blocks, layers = encoder.blocks, decoder.transformer.layers
        iou_head = decoder.iou_prediction_head
        return cls(
            embed_dim=encoder.patch_embed.proj.out_channels,
            depth=len(blocks),
            mlp_dim=blocks[0].mlp.lin1.out_features,
            global_layers=tuple(i for i, block in enumerate(blocks) if block.window_size == 0),
            window_size=max(block.window_size for block in blocks),
            image_size=encoder.img_size,
            patch_size=encoder.patch_embed.proj.kernel_size[0],
            rel_pos=blocks[0].attn.use_rel_pos,
            out_chans=encoder.neck[0].out_channels,
            decoder_dim=decoder.transformer_dim,
            decoder_depth=len(layers),
            decoder_mlp_dim=layers[0].mlp.lin1.out_features,
            attention_downsample=decoder.transformer_dim // layers[0].cross_attn_token_to_image.internal_dim,
            mask_tokens=decoder.num_mask_tokens,
            iou_head_depth=iou_head.num_layers,
            iou_head_hidden=iou_head.layers[0].out_features,
        )

    @classmethod
    def from_hf_config(cls, config: Any) -> SamShape:
        """The shape of a transformers `SamConfig` (the facebook/sam-vit-* family, SlimSAM)."""
        vision, decoder = config.vision_config, config.mask_decoder_config
        return cls(
            embed_dim=vision.hidden_size,
            depth=vision.num_hidden_layers,
            mlp_dim=vision.mlp_dim or int(vision.hidden_size * vision.mlp_ratio),
            global_layers=tuple(vision.global_attn_indexes),
            window_size=vision.window_size,
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            rel_pos=vision.use_rel_pos,
            out_chans=vision.output_channels,
            decoder_dim=decoder.hidden_size,
            decoder_depth=decoder.num_hidden_layers,
            decoder_mlp_dim=decoder.mlp_dim,
            attention_downsample=decoder.attention_downsample_rate,
            mask_tokens=decoder.num_multimask_outputs + 1,
            iou_head_depth=decoder.iou_head_depth,
            iou_head_hidden=decoder.iou_head_hidden_dim,
        )

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def encoder_flops(self) -> float:
        """FLOPs of one image through the image encoder."""
        d, g = self.embed_dim, self.grid
        n = g * g
        total = 2 * 3 * self.patch_size**2 * d * n
        for layer in range(self.depth):
            if layer in self.global_layers or self.window_size == 0:
                attended, scores, span = n, 4 * d * n * n, g
            else:
                w = self.window_size
                padded = math.ceil(g / w) * w
                attended, scores, span = padded**2, 4 * d * w**4 * (padded // w) ** 2, w
            total += 2 * 4 * d * d * attended + scores + 4 * d * self.mlp_dim * n
            if self.rel_pos:
                total += 2 * d * attended * 2 * span
        c = self.out_chans
        return float(total + 2 * d * c * n + 2 * 9 * c * c * n)

    def decoder_flops(self, prompts: int = 1) -> float:
        """FLOPs of the mask decoder for `prompts` point prompts (multimask output)."""
        big_c, n = self.decoder_dim, self.grid**2
        c = big_c // self.attention_downsample
        k = 1 + self.mask_tokens + POINT_TOKENS
        cross = 4 * n * big_c * c + 4 * k * big_c * c + 4 * k * n * c  # one direction, projections and scores
        layer = 8 * k * big_c**2 + 4 * k * k * big_c + 2 * cross + 4 * k * big_c * self.decoder_mlp_dim
        upscale = 2 * big_c * (big_c // 4) * 4 * n + 2 * (big_c // 4) * (big_c // 8) * 4 * (4 * n)
        hyper = self.mask_tokens * 2 * (2 * big_c * big_c + big_c * (big_c // 8))
        product = 2 * self.mask_tokens * (big_c // 8) * 16 * n
        h = self.iou_head_hidden
        iou = 2 * (big_c * h + (self.iou_head_depth - 2) * h * h + h * self.mask_tokens)
        per_prompt = self.decoder_depth * layer + cross + upscale + hyper + product + iou
        return float(per_prompt * prompts)


# segment-anything's build_sam.py: the official checkpoints' shapes.
SAM_SHAPES: dict[str, SamShape] = {
    "vit_b": SamShape(embed_dim=768, depth=12, mlp_dim=3072, global_layers=(2, 5, 8, 11)),
    "vit_l": SamShape(embed_dim=1024, depth=24, mlp_dim=4096, global_layers=(5, 11, 17, 23)),
    "vit_h": SamShape(embed_dim=1280, depth=32, mlp_dim=5120, global_layers=(7, 15, 23, 31)),
}


def automatic_passes(
    points_per_side: int, crop_n_layers: int = 0, crop_n_points_downscale_factor: int = 1
) -> tuple[int, int]:
    """(encoder passes, point prompts) of one image under the automatic generator: crop layer i
    cuts (2^i)² crops, each encoded once and prompted with (points_per_side / factor^i)² points."""
    encodes = prompts = 0
    for layer in range(crop_n_layers + 1):
        crops = (2**layer) ** 2
        encodes += crops
        prompts += crops * int(points_per_side / crop_n_points_downscale_factor**layer) ** 2
    return encodes, prompts


@dataclass(frozen=True)
class ImageFlops:
    """FLOPs of one image through a segmenter, split into its encoder and decoder."""

    encoder: float
    decoder: float

    @property
    def total(self) -> float:
        return self.encoder + self.decoder


def segmenter_flops(segmenter: Any) -> ImageFlops | None:
    """FLOPs per image of a `sam` or `hf-sam` segmenter, from its loaded model and knobs; None
    for segmenters without a neural model (slic, felzenszwalb, coco)."""
    if segmenter.name == "sam":
        shape = SamShape.from_segment_anything(segmenter.generator.predictor.model)
    elif segmenter.name == "hf-sam":
        shape = SamShape.from_hf_config(segmenter.pipeline.model.config)
    else:
        return None
    p = segmenter.params
    encodes, prompts = automatic_passes(p.points_per_side, p.crop_n_layers, p.crop_n_points_downscale_factor)
    return ImageFlops(encodes * shape.encoder_flops(), shape.decoder_flops(prompts))


def throughput_line(segmenter: Any, images: int, seconds: float) -> str:
    """ "<name>: N images in S s (R images/s)", then for SAM its FLOPs per image and, on a GPU
    whose peak is known, the fraction of it reached."""
    rate = images / seconds if seconds > 0 else 0.0
    line = f"{segmenter.name}: {images} images in {seconds:.1f} s ({rate:.2f} images/s)"
    flops = segmenter_flops(segmenter)
    if flops is None:
        return line
    line += (
        f", {format_flops(flops.total)}/image (encoder {format_flops(flops.encoder)}, "
        f"decoder {format_flops(flops.decoder)})"
    )
    share = utilization(flops.total * images, seconds, device_peak_flops(segmenter.device))
    return line + (f", {100 * share:.1f}% of the GPU's dense bf16 peak" if share is not None else "")
