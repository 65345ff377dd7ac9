"""Analytic FLOPs of a LLaVA training step, from the model's config (nanoGPT-style accounting).

Why from the config and not a profiler: the count is exact for the architecture, costs nothing
per step, works under ZeRO-3 (where a rank's parameters are shards) and gives MFU on any GPU
whose peak is known (`som.mfu`).

What is counted: the matrix multiplies (every Linear and the patch convolution) and the
attention score products; norms, activations, softmax and the embedding lookup are left out,
as nanoGPT and PaLM leave them out. Per micro-batch of sequences with lengths t_i (image tokens
included, padding excluded) and n images:

- language model, per token: forward 2·N, where N = L·(d·q + 2·d·kv + q·d + m·d·f) + d·V is
  its matmul parameter count (q = heads x head_dim, kv = key/value heads x head_dim, m = 3
  matrices in a gated MLP, f = the MLP width, V = the vocabulary: the LM head is a matmul,
  the input embedding is not); attention, per sequence: forward 4·L·q·t_i² (QKᵀ and AV over
  the full square, the causal mask's savings ignored, as nanoGPT's 12·L·H·Q·T counts it).
- vision tower, per image: forward 2·L_v·(4·d_v² + 2·d_v·f_v)·T + 2·(C·p²·d_v)·P + 4·L_v·d_v·T²,
  with P = (image_size / patch_size)² patches and T = P (+1 with a CLS token) tokens. Every
  layer runs, also those after the feature layer LLaVA reads. The blank image a text-only
  micro-batch passes through the tower (`BlankImagePass`) is overhead, not model work, and is
  not counted.
- projector, per image: forward 2·(d_v·k·d + d·d)·R, with R image tokens passed to the
  language model (T without the CLS token by default) and k feature layers concatenated.

The backward pass costs one forward for the gradients of the activations, needed wherever a
trained part lies upstream (the language model always: whatever trains sits before or inside
it; the projector when the tower trains; the tower when it trains), plus one forward for the
weight gradients of a part whose weights train (not for a LoRA-adapted language model, whose
frozen weights get none; the adapters are left out). Score products have no weights: both
of their inputs' gradients count. So a fully trained language model costs 6·N per token, as in
nanoGPT, and a frozen one 4·N. Recomputation by gradient checkpointing is not counted: these
are model FLOPs (MFU), not hardware FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from som.train.model import CLS_TOWERS

# Language model families whose MLP has two matrices; every other (Llama, Mistral, Qwen2,
# Gemma, ...) has a gated MLP of three.
_UNGATED = frozenset({"gpt2", "gpt_neox", "opt", "phi", "bloom", "falcon"})


@dataclass(frozen=True)
class TextShape:
    """What the language model's FLOPs depend on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    mlp_matrices: int = 3

    @classmethod
    def from_config(cls, config: Any) -> TextShape:
        heads = int(config.num_attention_heads)
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
            intermediate=int(config.intermediate_size),
            heads=heads,
            kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
            vocab=int(config.vocab_size),
            mlp_matrices=2 if getattr(config, "model_type", "") in _UNGATED else 3,
        )

    @property
    def matmul_params(self) -> int:
        """N: the weights every token is multiplied by (projections, MLP, LM head)."""
        q, kv, d = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden
        per_layer = d * q + 2 * d * kv + q * d + self.mlp_matrices * d * self.intermediate
        return self.layers * per_layer + d * self.vocab

    def forward_flops(self, tokens: float, squared_lengths: float) -> tuple[float, float]:
        """(matmul, attention-score) forward FLOPs of sequences with these token totals."""
        q = self.heads * self.head_dim
        return 2.0 * self.matmul_params * tokens, 4.0 * self.layers * q * squared_lengths


@dataclass(frozen=True)
class VisionShape:
    """What a ViT vision tower's FLOPs depend on."""

    layers: int
    hidden: int
    intermediate: int
    image_size: int
    patch_size: int
    channels: int = 3
    cls_token: bool = True

    @classmethod
    def from_config(cls, config: Any) -> VisionShape:
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
            intermediate=int(config.intermediate_size),
            image_size=int(config.image_size),
            patch_size=int(config.patch_size),
            channels=int(getattr(config, "num_channels", 3)),
            cls_token=getattr(config, "model_type", "") in CLS_TOWERS,
        )

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        return self.patches + int(self.cls_token)

    def forward_flops(self) -> tuple[float, float]:
        """(matmul, attention-score) forward FLOPs of one image."""
        d, t = self.hidden, self.tokens
        layer_params = 4 * d * d + 2 * d * self.intermediate
        patch_embed = self.channels * self.patch_size**2 * d
        matmuls = 2.0 * (self.layers * layer_params * t + patch_embed * self.patches)
        return matmuls, 4.0 * self.layers * d * t * t


@dataclass(frozen=True)
class LlavaFlops:
    """FLOPs of LLaVA training steps: the shapes, what trains, and the projector's input."""

    text: TextShape
    vision: VisionShape
    trainable: tuple[str, ...]
    lora: bool = False
    feature_layers: int = 1
    drops_cls: bool = True

    @classmethod
    def from_config(cls, llava_config: Any, trainable: tuple[str, ...], lora: bool) -> LlavaFlops:
        """From a transformers LlavaConfig and the training config's trainable parts / LoRA."""
        vision = VisionShape.from_config(llava_config.vision_config)
        layer = getattr(llava_config, "vision_feature_layer", -2)
        strategy = getattr(llava_config, "vision_feature_select_strategy", "default")
        return cls(
            TextShape.from_config(llava_config.text_config),
            vision,
            tuple(trainable),
            lora,
            feature_layers=len(layer) if isinstance(layer, (list, tuple)) else 1,
            drops_cls=vision.cls_token and strategy == "default",
        )

    @property
    def image_tokens(self) -> int:
        """Rows each image gives the projector and the language model."""
        return self.vision.tokens - int(self.drops_cls)

    def step_flops(self, tokens: float, squared_lengths: float, images: float) -> float:
        """FLOPs of one step (forward and backward) over micro-batches with these totals:
        `tokens` = Σ t_i, `squared_lengths` = Σ t_i², `images` = images encoded."""
        tower_trains = "vision_tower" in self.trainable
        lm_weights = "language_model" in self.trainable and not self.lora
        text_matmul, text_scores = self.text.forward_flops(tokens, squared_lengths)
        vision_matmul, vision_scores = self.vision.forward_flops()
        d, dv = self.text.hidden, self.vision.hidden
        projector = 2.0 * (dv * self.feature_layers * d + d * d) * self.image_tokens
        return (
            text_matmul * (2 + lm_weights)
            + text_scores * 3
            + images * projector * (1 + tower_trains + ("projector" in self.trainable))
            + images * (vision_matmul + vision_scores) * (1 + 2 * tower_trains)
        )
