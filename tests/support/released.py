"""Stand-ins for the four released downloads, in their layouts: LLaVA-Med v1.5 (config.json,
safetensors shards, tokenizer), CLIP ViT-L/14-336 (config.json, safetensors), MedSAM
(segment-anything .pth) and the released MediSee folder (.bin shards of the un-merged PEFT
state dict). Written from a model's tensors, or shape-only at any size (sparse safetensors
and meta-device pickles) so the layout of a full-size download can be checked cheaply."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from medisee import weights
from medisee.config import MediSeeConfig

DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def llava_config(config: MediSeeConfig, vocab_size: int) -> dict:
    """LLaVA-Med v1.5's config.json for ``config``'s sizes (the fields its file has)."""
    t = config.text
    return {
        "architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral",
        "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads, "max_position_embeddings": t.max_position_embeddings,
        "rms_norm_eps": t.rms_norm_eps, "rope_theta": t.rope_theta, "sliding_window": t.sliding_window,
        "vocab_size": vocab_size, "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "mm_hidden_size": config.clip.hidden_size, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": config.clip.feature_layer, "mm_vision_select_feature": "patch",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
    }


def clip_config(config: MediSeeConfig) -> dict:
    """CLIP's config.json (a CLIPConfig with its vision_config) for ``config``'s sizes."""
    c = config.clip
    vision = {"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size, "image_size": c.image_size,
              "patch_size": c.patch_size, "num_hidden_layers": c.num_hidden_layers,
              "num_attention_heads": c.num_attention_heads, "hidden_act": "quick_gelu", "projection_dim": 16}
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 16, "vision_config": vision,
            "text_config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def write_release(model: torch.nn.Module, config: MediSeeConfig, root: Path, vocab_size: int,
                  base_layer: bool = False) -> dict[str, Path]:
    """The four downloads from ``model``'s tensors (LLaVA-Med without the CLIP tower, as
    LLaVA-Med v1.5 ships; ``base_layer``: the LoRA-wrapped weights spelt as newer peft does).
    The tokenizer is not written: the caller puts one in ``llava-med``."""
    llava = {k: v for k, v in weights.export_layout(model, weights.llava_key).items()
             if not k.startswith("model.vision_tower.")}
    weights.write_state_dict(llava, root / "llava-med", "model", shards=2, safetensors=True)
    write_json(root / "llava-med" / "config.json", llava_config(config, vocab_size))
    weights.write_state_dict(weights.export_layout(model, weights.clip_key), root / "clip", "model", safetensors=True)
    write_json(root / "clip" / "config.json", clip_config(config))
    torch.save(weights.export_layout(model, weights.sam_key), root / "medsam_vit_b.pth")
    released = weights.export_layout(model, weights.released_key)
    if base_layer:
        released = {with_base_layer(k): v for k, v in released.items()}
    weights.write_state_dict(released, root / "medisee", "pytorch_model", shards=2)
    return {"llava_med": root / "llava-med", "clip": root / "clip", "medsam": root / "medsam_vit_b.pth",
            "medisee": root / "medisee"}


def with_base_layer(key: str) -> str:
    """A released key as newer peft writes it: the LoRA-wrapped linear's own weight under ``base_layer``."""
    for module in (".q_proj.", ".v_proj."):
        if module in key and ".lora_" not in key:
            return key.replace(module, module + "base_layer.")
    return key


def shape_only_release(model: torch.nn.Module, config: MediSeeConfig, root: Path, vocab_size: int) -> list[Path]:
    """The four downloads at ``model``'s (meta-device) sizes without their values: LLaVA-Med
    and CLIP as sparse safetensors (headers, then a hole as long as the data), MedSAM and
    MediSee as pickles of meta tensors. Returns every weight and config file written."""
    files = []
    llava = _shapes(model, weights.llava_key, lambda k: not k.startswith("model.vision_tower."))
    keys = sorted(llava)
    half = len(keys) // 2
    for i, part in enumerate((keys[:half], keys[half:])):
        files.append(_sparse_safetensors({k: llava[k] for k in part}, root / "llava-med" / f"model-{i + 1:05d}-of-00002.safetensors"))
    files.append(_sparse_safetensors(_shapes(model, weights.clip_key), root / "clip" / "model.safetensors"))
    write_json(root / "llava-med" / "config.json", llava_config(config, vocab_size))
    write_json(root / "clip" / "config.json", clip_config(config))
    files += [root / "llava-med" / "config.json", root / "clip" / "config.json"]
    torch.save(_meta_tensors(model, weights.sam_key), root / "medsam_vit_b.pth")
    files.append(root / "medsam_vit_b.pth")
    released = _meta_tensors(model, weights.released_key)
    keys = sorted(released)
    half = len(keys) // 2
    (root / "medisee").mkdir(parents=True, exist_ok=True)
    for i, part in enumerate((keys[:half], keys[half:])):
        file = root / "medisee" / f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: released[k] for k in part}, file)
        files.append(file)
    return files


def _shapes(model, key_fn, keep=lambda key: True) -> dict[str, tuple[torch.Size, torch.dtype]]:
    state = model.state_dict()
    return {key: (state[ours].shape, state[ours].dtype)
            for ours, key in weights.layout_mapping(model, key_fn).items() if keep(key)}


def _meta_tensors(model, key_fn) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in _shapes(model, key_fn).items()}


def _sparse_safetensors(shapes: dict[str, tuple[torch.Size, torch.dtype]], file: Path) -> Path:
    """A valid safetensors header for ``shapes`` followed by a hole (no disk blocks)."""
    header, offset = {}, 0
    for key, (shape, dtype) in shapes.items():
        size = dtype.itemsize * int(torch.Size(shape).numel())
        header[key] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.truncate(8 + len(raw) + offset)
    return file
