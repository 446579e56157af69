"""Which parameters train (paper section 4.3): LoRA on the language model's attention,
full training of lm_head, embed_tokens, mask decoder, seg projection, box decoder and
both routers (and, as in MIMO, the visual prompt encoder and input aligner); CLIP tower, projector, SAM image and prompt encoders frozen."""

from __future__ import annotations

from torch import nn

from ..config import LoraSettings

FIXED_SUFFIX = "positional_embedding"  # SAM's random Fourier features (a buffer in segment-anything)
MASK_DECODER = ("mask_head.sam.mask_decoder.", "mask_head.fine_stem.")  # the stem is ours (SamConfig.fine_features)
FULLY_TRAINED = (
    "mllm.language_model.lm_head.",
    "mllm.language_model.model.embed_tokens.",
    *MASK_DECODER,
    "text_hidden_fcs.",
    "bbox_decoder.",
    "router_seg.",
    "router_box.",
    "prompt_encoder.",  # MIMO trains the visual prompt encoder and the input aligner
    "input_aligner.",
    "patch_head.",  # ours: the auxiliary patch head of models whose CLIP-like encoder trains from scratch
    "query_head.",  # ours: which structures a question asks for (query tags)
)


def inject_lora(model: nn.Module, settings: LoraSettings) -> None:
    """Add (un-merged) LoRA adapters to the language model's target projections only.

    Uses peft in place, so parameter names become ``...q_proj.base_layer.weight`` and
    ``...q_proj.lora_A.default.weight``; CLIP's own q/v projections stay untouched."""
    # peft takes about 2 s to import: only building a model with LoRA needs it (not --help or demo-data)
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    inject_adapter_in_model(config, model.mllm.language_model.model)


def configure_trainable(model: nn.Module, train_encoders: bool = False) -> list[str]:
    """Set ``requires_grad`` per the paper and return the names of trainable parameters.

    ``train_encoders`` unfreezes CLIP, the projector, the whole language model and SAM's
    encoders: only for presets trained from scratch (the tiny model), never for presets
    that load pretrained weights."""
    names = []
    for name, param in model.named_parameters():
        trainable = "lora_" in name or name.startswith(FULLY_TRAINED)
        if train_encoders:
            trainable = True
        if name.endswith(FIXED_SUFFIX):  # a fixed buffer in segment-anything, never trained
            trainable = False
        param.requires_grad_(trainable)
        if trainable:
            names.append(name)
    return names


def train_only(model: nn.Module, prefix: str | tuple[str, ...]) -> list[str]:
    """Freeze everything but the parameters under ``prefix`` (one or several); returns their names."""
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefix) and not name.endswith(FIXED_SUFFIX))
        if param.requires_grad:
            names.append(name)
    return names


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Freeze the parameters under each prefix; returns the names still trainable. A prefix
    that names no parameter is an error (a typo would otherwise train what it meant to freeze)."""
    names = [name for name, _ in model.named_parameters()]
    unknown = [prefix for prefix in prefixes if not any(name.startswith(prefix) for name in names)]
    if unknown:
        raise ValueError(f"freeze: no parameters under {unknown}")
    trainable = []
    for name, param in model.named_parameters():
        if name.startswith(tuple(prefixes)):
            param.requires_grad_(False)
        if param.requires_grad:
            trainable.append(name)
    return trainable


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (tied tensors count once)."""
    seen, total = set(), 0
    for param in module.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total
