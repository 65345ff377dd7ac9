"""A tiny, randomly initialised Segment Anything model built from segment-anything's own modules.

It has the real architecture (ViT image encoder with windowed + global attention and relative
positions, prompt encoder, two-way-transformer mask decoder) at toy sizes, so the real
SamAutomaticMaskGenerator path runs on CPU in well under a second per image. Its masks are
meaningless; tests use it to exercise plumbing, not quality.
"""

from __future__ import annotations

from functools import partial
from typing import Any


def build_tiny_sam(seed: int = 0, img_size: int = 128) -> Any:
    """A seeded tiny `segment_anything.modeling.Sam` (img_size must be a multiple of 16)."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    patch_size = 16
    prompt_dim = 32
    embedding_size = img_size // patch_size
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=32,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(img_size, img_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    )
    return sam.eval()
