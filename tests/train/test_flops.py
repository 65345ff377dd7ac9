"""Training's analytic accounting: the FLOPs formula against a hand count and against torch's
FLOP counter on tiny real models, and the per-step FLOPs / MFU fields of the metrics."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from som.train.flops import LlavaFlops, TextShape, VisionShape
from som.train.metrics import step_record, summarize

# L=2, d=8, 2 heads of 4 (q=8), 1 key/value head (kv=4), MLP 16 (gated), vocabulary 10:
# N = 2·(8·8 + 2·8·4 + 8·8 + 3·8·16) + 8·10 = 1232.
TEXT = TextShape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10)
# One layer of width 4, MLP 8, 8 px images of 4 px patches: P = 4 patches, T = 5 tokens with CLS.
VISION = VisionShape(layers=1, hidden=4, intermediate=8, image_size=8, patch_size=4)
# Two sequences of 3 and 5 tokens (Σt = 8, Σt² = 34) and one image.
TOKENS, SQUARES, IMAGES = 8, 34, 1


def test_shapes_by_hand() -> None:
    assert TEXT.matmul_params == 1232
    # 2·1232·8 and 4·L·q·Σt² = 4·2·8·34
    assert TEXT.forward_flops(TOKENS, SQUARES) == (19712, 2176)
    # 2·(L·(4·4² + 2·4·8)·T + 3·4²·4·P) = 2·(128·5 + 192·4); 4·L·d·T² = 4·1·4·25
    assert VISION.forward_flops() == (2816, 400)


@pytest.mark.parametrize(
    ("trainable", "lora", "expected"),
    [
        # text 3·(19712 + 2176); projector 2·(4·8 + 8·8)·4 rows = 768, forward + weights; tower forward
        (("projector", "language_model"), False, 65664 + 768 * 2 + 3216),
        # a frozen or LoRA-adapted language model: activation gradients only (4·N, not 6·N)
        (("projector",), False, 2 * 19712 + 3 * 2176 + 768 * 2 + 3216),
        (("projector", "language_model"), True, 2 * 19712 + 3 * 2176 + 768 * 2 + 3216),
        # a trained tower: its backward (x3), and gradients through the projector into it
        (("vision_tower", "projector", "language_model"), False, 65664 + 768 * 3 + 3216 * 3),
    ],
)
def test_step_flops_by_hand(trainable: tuple[str, ...], lora: bool, expected: int) -> None:
    flops = LlavaFlops(TEXT, VISION, trainable, lora=lora)
    assert flops.image_tokens == 4  # the CLS token is dropped ("default" strategy)
    assert flops.step_flops(TOKENS, SQUARES, IMAGES) == expected


def test_a_fully_trained_language_model_costs_six_n_per_token() -> None:
    """nanoGPT's rule: without images or attention, a step is 6·N·tokens."""
    flops = LlavaFlops(TEXT, VISION, ("language_model",))
    assert flops.step_flops(1000, 0, 0) == 6 * TEXT.matmul_params * 1000


def _counted(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops()


def test_forward_flops_match_torch_on_tiny_llama_and_clip() -> None:
    """The formula is the architecture: torch's counter over a real forward (eager attention,
    whose score products it sees) gives the same number."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    llama._attn_implementation = "eager"
    ids = torch.randint(0, 100, (1, 12))
    assert _counted(LlamaForCausalLM(llama).eval(), ids) == sum(TextShape.from_config(llama).forward_flops(12, 144))
    clip = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    clip._attn_implementation = "eager"
    pixels = torch.randn(1, 3, 32, 32)
    assert _counted(CLIPVisionModel(clip).eval(), pixels) == sum(VisionShape.from_config(clip).forward_flops())


def test_llava_config_gives_the_shapes() -> None:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=4, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1, image_size=8, patch_size=4
        ),
        text_config=LlamaConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=4,
            vocab_size=10,
        ),
    )
    flops = LlavaFlops.from_config(config, ("projector", "language_model"), lora=False)
    assert (flops.text, flops.vision) == (TEXT, VISION)
    assert flops.step_flops(TOKENS, SQUARES, IMAGES) == 65664 + 768 * 2 + 3216


def test_step_records_carry_flops_and_mfu() -> None:
    records = [
        step_record(
            step=step,
            epoch=0,
            loss=1.0,
            lr=0.1,
            grad_norm=1.0,
            samples=4,
            tokens=100,
            seconds=seconds,
            flops=1e12,
            peak_flops=1e13,
            devices=2,
        )
        for step, seconds in ((1, 0.5), (2, 1.0))
    ]
    assert records[0]["flops_per_step"] == 1e12
    assert records[0]["mfu"] == pytest.approx(0.1)  # 1e12 / (0.5 s x 2 x 1e13)
    summary = summarize(records, wall_time_s=2.0)
    assert summary["flops_per_s"] == pytest.approx(2e12 / 1.5)
    assert summary["mfu"] == pytest.approx(2e12 / (1.5 * 2 * 1e13))  # weighted by step time
    cpu = step_record(step=1, epoch=0, loss=1.0, lr=0.1, grad_norm=None, samples=4, tokens=100, seconds=0.5, flops=1e12)
    assert cpu["mfu"] is None and summarize([cpu], wall_time_s=1.0)["mfu"] is None
