"""8-bit and 4-bit language-model weights through bitsandbytes, for 8-16 GB GPUs.

The 7B language model is 14 GiB of the model's 14.3 GiB in bfloat16. bitsandbytes stores
its linear layers as int8 (LLM.int8, outliers above 6 in bfloat16) or NF4 with double
quantisation, computing in bfloat16; LoRA is merged into them first. Embeddings, lm_head,
norms, CLIP, SAM and the heads stay in bfloat16. bitsandbytes is an optional dependency,
imported only here and only when asked for; its kernels need a CUDA GPU.
"""

from __future__ import annotations

import torch
from torch import nn

QUANTISED = {"8bit": 8, "4bit": 4}
INSTALL = "pip install bitsandbytes==0.50.2"


def require_quantisation(precision: str, device: str) -> None:
    """Fail before any weight is read when 8/4-bit cannot run here (one line, no traceback)."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise ValueError(f"--precision {precision} needs a CUDA GPU (bitsandbytes) and --device cuda; "
                         f"this run has {'no CUDA GPU' if not torch.cuda.is_available() else 'device ' + str(device)}: "
                         "use --precision bfloat16 or float32")
    try:
        import bitsandbytes  # noqa: F401  (optional: only for 8/4-bit weights)
    except ImportError:
        raise ValueError(f"--precision {precision} needs bitsandbytes, which is not installed: {INSTALL}") from None


def quantise_language_model(model: nn.Module, precision: str, device: str) -> int:
    """Merge LoRA into the language model's layers, then replace each of their linear layers
    by bitsandbytes' ``precision`` one on ``device``; returns how many were replaced."""
    require_quantisation(precision, device)
    import bitsandbytes as bnb  # optional dependency (checked above)

    language_model = model.mllm.language_model
    _merge_lora(language_model)
    replaced = 0
    for parent in list(language_model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, _quantised(bnb, child, QUANTISED[precision]).to(device))
                replaced += 1
    return replaced


def _merge_lora(module: nn.Module) -> None:
    """Fold peft's LoRA adapters into their base weights and drop the wrappers."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if hasattr(child, "merge") and hasattr(child, "base_layer"):
                child.merge()
                setattr(parent, name, child.base_layer)


def _quantised(bnb, linear: nn.Linear, bits: int) -> nn.Module:
    """A bitsandbytes layer holding ``linear``'s weights (quantised when moved to the GPU)."""
    weight = linear.weight.data.to(torch.bfloat16)
    if bits == 8:
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                    has_fp16_weights=False, threshold=6.0)
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                  compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True, quant_type="nf4")
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data.to(torch.bfloat16), requires_grad=False)
    return layer
