"""The memory a model needs at each precision, computed from its parameter counts.

Built on the meta device, so the 7B model is counted without allocating it. 8-bit and
4-bit are bitsandbytes' (``medisee.quantize``): only the language model's linear layers are
quantised (LoRA merged into them first); embeddings, lm_head, norms, CLIP, SAM and the heads
stay in bfloat16, as transformers' own bitsandbytes path leaves them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .config import MediSeeConfig

PRECISIONS = ("fp32", "bf16", "8-bit", "4-bit")
QUANTISED_LAYERS = "mllm.language_model.model.layers."
GIB = 1024 ** 3
# bitsandbytes' storage per quantised weight: LLM.int8 keeps one int8 value per weight and one
# float32 scale per output row; NF4 keeps half a byte per weight and one absmax per block of 64,
# with double quantisation an int8 absmax plus a float32 scale per 256 blocks
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
GPU_SIZES_GIB = (8, 12, 16, 24, 32, 40, 48, 80)
ALLOWANCE_GIB = 1.5  # activations of one slice and the CUDA context: an allowance, gpu_check.sh measures
USABLE = 0.94  # of a card's memory that a process gets (the driver and ECC keep the rest)


@dataclass
class MemoryRow:
    precision: str
    weights: int  # bytes
    kv_cache: int  # bytes for one slice's conversation (image slot + question + a full answer)

    @property
    def suggested_gpu_gib(self) -> int | None:
        """The smallest common GPU size that holds weights, cache and the allowance."""
        need = (self.weights + self.kv_cache) / GIB + ALLOWANCE_GIB
        return next((size for size in GPU_SIZES_GIB if size * USABLE >= need), None)


def memory_rows(model: nn.Module, config: MediSeeConfig, question_tokens: int = 64) -> list[MemoryRow]:
    """One row per precision for ``model`` (any device, meta included)."""
    quantisable = out_rows = other = lora = 0
    for name, param in model.named_parameters():
        if "lora_" in name:
            lora += param.numel()
        elif name.startswith(QUANTISED_LAYERS) and param.ndim == 2:
            quantisable += param.numel()
            out_rows += param.shape[0]
        else:
            other += param.numel()
    tokens = config.num_image_slot_tokens + question_tokens + config.max_new_tokens
    t = config.text
    kv_per_token = 2 * t.num_hidden_layers * t.num_key_value_heads * (t.hidden_size // t.num_attention_heads)
    total = quantisable + other + lora
    return [
        MemoryRow("fp32", 4 * total, 4 * kv_per_token * tokens),
        MemoryRow("bf16", 2 * total, 2 * kv_per_token * tokens),
        MemoryRow("8-bit", quantisable + 4 * out_rows + 2 * other, 2 * kv_per_token * tokens),
        MemoryRow("4-bit", round(NF4_BYTES * quantisable) + 2 * other, 2 * kv_per_token * tokens),
    ]


def memory_table(model: nn.Module, config: MediSeeConfig) -> str:
    """The rows as the text ``medisee info --memory`` prints."""
    lines = [f"  memory by precision (weights from the parameter counts; KV cache of one slice's conversation, "
             f"{config.num_image_slot_tokens} image + 64 question + {config.max_new_tokens} answer tokens):",
             f"  {'precision':10s} {'weights':>10s} {'KV cache':>10s} {'suggested GPU':>14s}"]
    for row in memory_rows(model, config):
        gpu = f"{row.suggested_gpu_gib} GB" if row.suggested_gpu_gib is not None else "> 80 GB"
        lines.append(f"  {row.precision:10s} {row.weights / GIB:>7.2f} GiB {row.kv_cache / GIB:>6.2f} GiB {gpu:>14s}")
    lines.append(f"  (suggested GPU: weights + KV cache + {ALLOWANCE_GIB} GiB for activations and the CUDA context, "
                 f"an allowance, within {USABLE:.0%} of the card; benchmarks/gpu_check.sh measures the peaks. "
                 "8-bit and 4-bit: bitsandbytes on the language model's linear layers, --precision 8bit|4bit, CUDA only)")
    return "\n".join(lines)
