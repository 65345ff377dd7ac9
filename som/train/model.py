"""The LLaVA-1.5 model through transformers' own Llava classes: assembled from a vision tower and
a language model (stage 1, or stage 2 from parts), or loaded from an existing LLaVA checkpoint
(a llava-hf model, or our own stage-1 export), with the parts a stage trains unfrozen.

Why transformers' classes rather than LLaVA's own modules: the export is then a plain
``LlavaForConditionalGeneration`` folder that every transformers tool (and our evaluation)
loads and generates with, with no custom code. Their pieces map one to one: the vision tower's
penultimate hidden layer with the CLS token dropped (``vision_feature_layer=-2``,
``vision_feature_select_strategy="default"``) and ``LlavaMultiModalProjector`` (Linear, GELU,
Linear) is LLaVA's ``mlp2x_gelu``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn

from som.train.config import TrainConfig

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
# Towers whose hidden states start with a CLS token (LLaVA drops it); others keep every token.
CLS_TOWERS = frozenset({"clip_vision_model", "vit", "dinov2"})
# Where each trainable part lives in a LlavaForConditionalGeneration's parameter names.
PART_PREFIXES = {
    "vision_tower": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.",),
    "language_model": ("model.language_model.", "lm_head."),
}


class ModelLoadError(RuntimeError):
    """A model part could not be loaded; the message names the part and the id."""


@dataclass
class BuiltModel:
    """The model to train (a PeftModel when LoRA is on) and the processor that feeds it.

    `zero3_config` is transformers' HfDeepSpeedConfig when the weights were built partitioned
    (ZeRO-3): transformers keeps only a weak reference to it, so its owner must hold it for
    as long as transformers code may touch the model (the whole run, as the HF Trainer does)."""

    model: nn.Module
    processor: Any  # LlavaProcessor
    zero3_config: Any = None


def is_zero3(ds_config: dict[str, Any] | None) -> bool:
    return ds_config is not None and ds_config.get("zero_optimization", {}).get("stage") == 3


def build_model(
    config: TrainConfig, dtype: torch.dtype = torch.float32, ds_config: dict[str, Any] | None = None
) -> BuiltModel:
    """The model of `config`: loaded or assembled, parts frozen per stage, LoRA and gradient
    checkpointing applied. Deterministic for a given `config.seed` (the projector's init).

    With a ZeRO-3 `ds_config` (the one `deepspeed.initialize` gets) every weight is partitioned
    as it is made (``deepspeed.zero.Init``) instead of built whole on the host of every rank:
    a 13B model in bf16 is 26 GB per rank otherwise, 210 GB on an 8-GPU node. Needs the process
    group to be up."""
    torch.manual_seed(config.seed)
    zero3_config = None
    if is_zero3(ds_config):
        from transformers.integrations import HfDeepSpeedConfig

        # from_pretrained sees it (weakly) and builds under zero.Init; rank 0 alone reads the
        # checkpoint and scatters each layer to the ranks' shards.
        zero3_config = HfDeepSpeedConfig(ds_config)
    if config.init_checkpoint:
        model, processor = load_llava(config.init_checkpoint, dtype=dtype, local_files_only=config.local_files_only)
    else:
        assert config.vision_tower and config.language_model  # validated by load_config
        model, processor = assemble_llava(
            config.vision_tower,
            config.language_model,
            dtype=dtype,
            feature_layer=config.vision_feature_layer,
            strategy=config.vision_feature_select_strategy,
            local_files_only=config.local_files_only,
            seed=config.seed,
            zero3_config=zero3_config,
        )
    set_trainable(model, config.trainable, lora=config.lora.enabled)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.lora.enabled:
        model = apply_lora(model, config)
    log.info(
        "model ready: %s trainable of %s parameters (%s)",
        f"{count_parameters(model, True):,}",
        f"{count_parameters(model, False):,}",
        ", ".join(config.trainable),
    )
    return BuiltModel(model=model, processor=processor, zero3_config=zero3_config)


def text_hidden_size(config: TrainConfig) -> int:
    """The language model's hidden size, from its config file alone (the DeepSpeed config's
    bucket sizes need it before the weights exist under ZeRO-3)."""
    from transformers import AutoConfig

    source = config.init_checkpoint or config.language_model
    assert source  # validated by load_config
    part = "init_checkpoint" if config.init_checkpoint else "language_model"
    loaded = _load(part, source, AutoConfig.from_pretrained, local_files_only=config.local_files_only)
    return int(loaded.get_text_config().hidden_size)


def _rows(weight: torch.Tensor) -> int:
    """Rows of a weight, whole: a ZeRO-3 partitioned parameter's own shape is empty."""
    return int(getattr(weight, "ds_shape", weight.shape)[0])


# ----------------------------------------------------------------------------- loading


def _load(part: str, model_id: str, loader: Any, **kwargs: Any) -> Any:
    try:
        return loader(model_id, **kwargs)
    except (OSError, ValueError) as exc:
        where = (
            " (local_files_only: only the local cache and folders are searched)"
            if kwargs.get("local_files_only")
            else ""
        )
        raise ModelLoadError(f"{part} {model_id!r} could not be loaded{where}: {exc}") from exc


def load_llava(
    checkpoint: str, *, dtype: torch.dtype = torch.float32, local_files_only: bool = False
) -> tuple[nn.Module, Any]:
    """An existing LLaVA checkpoint (llava-hf layout) and its processor."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = _load(
        "init_checkpoint",
        checkpoint,
        LlavaForConditionalGeneration.from_pretrained,
        dtype=dtype,
        local_files_only=local_files_only,
    )
    processor = _load(
        "init_checkpoint processor", checkpoint, AutoProcessor.from_pretrained, local_files_only=local_files_only
    )
    return model, processor


def _vision_config(vision_id: str, local_files_only: bool) -> Any:
    """The vision part of a tower's config (a full CLIP/SigLIP checkpoint holds both towers)."""
    from transformers import AutoConfig

    config = _load("vision_tower", vision_id, AutoConfig.from_pretrained, local_files_only=local_files_only)
    return getattr(config, "vision_config", None) or config


def assemble_llava(
    vision_id: str,
    lm_id: str,
    *,
    dtype: torch.dtype = torch.float32,
    feature_layer: int = -2,
    strategy: Literal["default", "full"] | None = None,
    local_files_only: bool = False,
    seed: int = 0,
    zero3_config: Any = None,
) -> tuple[nn.Module, Any]:
    """A LlavaForConditionalGeneration made of a pretrained vision tower, a pretrained causal LM
    and a freshly initialised ``mlp2x_gelu`` projector, plus a LlavaProcessor for both.

    `zero3_config` (ZeRO-3: transformers' HfDeepSpeedConfig, alive, so the two from_pretrained
    calls partition their weights) makes the projector under ``deepspeed.zero.Init`` too; its
    random init is made whole, broadcast from rank 0 and then split. The projector's init
    depends on `seed` alone, not on how much randomness loading the parts used (ZeRO-3's
    partitioned loading uses some), so every ZeRO stage starts from the same weights."""
    from transformers import (
        MODEL_MAPPING,
        AutoImageProcessor,
        AutoModelForCausalLM,
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedModel,
    )
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    vision_config = _vision_config(vision_id, local_files_only)
    has_cls = vision_config.model_type in CLS_TOWERS
    strategy = strategy or ("default" if has_cls else "full")
    try:
        # MODEL_MAPPING's values are model classes; transformers annotates them as tuples
        vision_class = cast("type[PreTrainedModel]", MODEL_MAPPING[type(vision_config)])
    except KeyError as exc:
        raise ModelLoadError(
            f"vision_tower {vision_id!r}: transformers has no vision model for "
            f"config type {type(vision_config).__name__}"
        ) from exc
    vision = _load(
        "vision_tower",
        vision_id,
        vision_class.from_pretrained,
        config=vision_config,
        dtype=dtype,
        local_files_only=local_files_only,
    )
    image_processor = _load(
        "vision_tower image processor", vision_id, AutoImageProcessor.from_pretrained, local_files_only=local_files_only
    )
    tokenizer = _load(
        "language_model tokenizer", lm_id, AutoTokenizer.from_pretrained, local_files_only=local_files_only
    )
    lm = _load(
        "language_model", lm_id, AutoModelForCausalLM.from_pretrained, dtype=dtype, local_files_only=local_files_only
    )
    _prepare_tokenizer(tokenizer)
    if len(tokenizer) > _rows(lm.get_input_embeddings().weight):
        lm.resize_token_embeddings(len(tokenizer))
        if zero3_config is not None:
            # transformers makes the resized embeddings (and untied head) as whole tensors;
            # partition them too (already partitioned weights are left as they are).
            import deepspeed

            deepspeed.zero.Init(module=lm, config_dict_or_path=zero3_config.config, mem_efficient_linear=False)

    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    # Not a LlavaConfig field: the config's strict dataclass keeps extra keyword arguments as attributes
    extra: dict[str, Any] = {"pad_token_id": tokenizer.pad_token_id}
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=lm.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=patches + (1 if has_cls and strategy == "full" else 0),
        projector_hidden_act="gelu",
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=strategy,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
        **extra,
    )
    # The shell is made on the meta device: its random tower and LM would be thrown away.
    with _zero3_off(zero3_config), torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = lm.get_decoder()
    model.lm_head = lm.get_output_embeddings()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if zero3_config is not None:
            import deepspeed

            with deepspeed.zero.Init(config_dict_or_path=zero3_config.config):  # dtype: its bf16
                model.model.multi_modal_projector = LlavaMultiModalProjector(config)
        else:
            model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    model.generation_config = lm.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1 if has_cls else 0,
        image_token=IMAGE_TOKEN,
    )
    log.info(
        "assembled LLaVA from vision tower %s (%s, layer %d, %s) and LM %s",
        vision_id,
        vision_config.model_type,
        feature_layer,
        strategy,
        lm_id,
    )
    return model, processor


@contextlib.contextmanager
def _zero3_off(zero3_config: Any) -> Iterator[None]:
    """transformers' ZeRO-3 mode off for a while: it would initialise the meta shell's
    submodules as partitioned weights (and fail: meta tensors hold no data)."""
    if zero3_config is None:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(zero3_config)


def _prepare_tokenizer(tokenizer: Any) -> None:
    """Add the image placeholder; pad with <unk> as LLaVA's Vicuna runs do, else a new <pad>."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})


# ----------------------------------------------------------------------------- forward


class BlankImagePass:
    """Runs the vision tower and projector on a blank image inside a text-only forward, at the
    very point an image batch runs them: right after the token embeddings, before the LM.

    Why: ZeRO-3 gathers each module's partitioned weights collectively and prefetches them in
    the order it recorded; ranks that call modules in different orders in one step (one rank
    on images: embeddings, tower, projector, LM; another on text: embeddings, LM, and the tower
    afterwards) issue mismatched all-gathers and hang. With the pass armed, a text-only
    micro-batch calls the same modules in the same order as an image batch, and the features
    (times 0) join the graph at the embeddings as real features do, so backward visits the
    same modules in the same order too, and every trainable part gets a gradient on every rank
    (ZeRO-2's gradient buckets stay aligned as well). LLaVA feeds text-only samples a blank
    image for the same reason.

    Install it on the module the engine wraps *after* ``deepspeed.initialize``, so that
    DeepSpeed's own hooks on the embeddings run first, as they do before an image batch's
    vision pass."""

    def __init__(self, model: nn.Module) -> None:
        # A LlavaForConditionalGeneration, or the PeftModel around one (LoRA), used duck-typed
        # (nn.Module types its dynamic attributes as Tensor | Module)
        get_base_model = getattr(model, "get_base_model", None)
        llava: Any = get_base_model() if get_base_model is not None else model
        vision = llava.config.vision_config
        size = getattr(vision, "image_size", None)
        if isinstance(size, (tuple, list)):
            size = size[0]
        self.shape = (1, int(getattr(vision, "num_channels", 3)), int(size), int(size)) if size else None
        if self.shape is None:
            log.warning("vision config has no image_size: text-only batches skip the blank image")
        self._llava = llava.model
        self._armed = False
        self._dtype = torch.float32
        self._handle = llava.get_input_embeddings().register_forward_hook(self._hook)

    @contextlib.contextmanager
    def armed(self, dtype: torch.dtype) -> Iterator[None]:
        """Within it, the next embedding call is followed by the blank vision pass."""
        self._armed, self._dtype = True, dtype
        try:
            yield
        finally:
            self._armed = False

    def _hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not self._armed or self.shape is None:
            return None
        self._armed = False
        blank = torch.zeros(self.shape, device=output.device, dtype=self._dtype)
        features = self._llava.get_image_features(pixel_values=blank).pooler_output
        return output + 0.0 * sum(f.sum() for f in features).to(output.dtype)

    def remove(self) -> None:
        self._handle.remove()


def forward_loss(
    model: Any, batch: dict[str, Any], blank: BlankImagePass, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The loss of one micro-batch, with the same module order whatever it holds: images
    through the model's own vision pass, text alone through `blank`'s. `model` is the
    DeepSpeed engine (or the plain module in tests)."""
    inputs = {k: v.to(device) for k, v in batch.items() if k != "ids"}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        return model(**inputs).loss
    with blank.armed(dtype):
        return model(**inputs).loss


# ----------------------------------------------------------------------------- what trains


def set_trainable(model: nn.Module, parts: tuple[str, ...], lora: bool = False) -> None:
    """Freeze everything but `parts`; with LoRA the language model's own weights stay frozen
    (its adapters, added afterwards, are what trains)."""
    prefixes = tuple(p for part in parts if not (lora and part == "language_model") for p in PART_PREFIXES[part])
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes))


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward pass (non-reentrant, so frozen inputs are fine)."""
    from transformers import PreTrainedModel

    assert isinstance(model, PreTrainedModel)  # the Llava model, before any LoRA wrapper
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def lora_target_pattern(targets: tuple[str, ...]) -> str:
    """A regex matching the target layers inside the language model only (never the tower)."""
    names = "|".join(sorted(targets))
    return rf".*language_model\..*\.({names})"


def apply_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Wrap `model` with LoRA adapters on the language model; trainable parts other than the LM
    (the projector) keep training in full."""
    from peft import LoraConfig, get_peft_model

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    settings = config.lora
    peft_config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        bias="none",
        target_modules=lora_target_pattern(settings.targets),
    )
    wrapped = get_peft_model(model, peft_config)
    for name, param in model.named_parameters():
        if name in trainable:
            param.requires_grad_(True)
    if not any("lora_" in n for n, _ in wrapped.named_parameters()):
        raise ModelLoadError(f"lora.targets {list(settings.targets)} match no layer of the language model")
    return wrapped


def count_parameters(model: nn.Module, trainable_only: bool) -> int:
    """Parameter count (ZeRO-3 partitioned parameters report their full size in ds_numel)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad or not trainable_only)


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer groups: the projector at `projector_lr` when set (LLaVA's LoRA recipe trains it
    at 2e-5 beside adapters at 2e-4), everything else at `lr`."""
    projector: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (projector if "multi_modal_projector." in name else rest).append(param)
    groups = []
    if rest:
        groups.append({"params": rest, "lr": config.lr, "weight_decay": config.weight_decay})
    if projector:
        groups.append(
            {"params": projector, "lr": config.projector_lr or config.lr, "weight_decay": config.weight_decay}
        )
    return groups
