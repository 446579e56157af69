"""The model's shapes, read from the downloaded folders, and which file gave each part.

``medisee convert`` builds the model from what the downloads say rather than from a preset
alone, so another LLaVA-Med build or a MedSAM of other sizes loads as it is: the language
model and projector from LLaVA-Med's ``config.json``, the CLIP tower from CLIP's
``config.json`` (or from its tensors when only they are there), the mask head from the
MedSAM checkpoint's tensors (or the released MediSee folder's), the heads and LoRA from the
released MediSee tensors. What no file says (attention heads of SAM's decoder, LoRA alpha,
preprocessing, the inference choices) comes from the preset. When two files disagree the
loader's error names the weight file and the file that gave the model its shape.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from transformers import CLIPVisionConfig

from .config import ClipConfig, MediSeeConfig, SamConfig, TextConfig
from .tensor_files import TensorFiles, WeightsError

CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
RELEASED_PREFIX = "base_model.model.model."  # the released MediSee state dict's model prefix
SAM_IN_RELEASE = RELEASED_PREFIX + "visual_model."
CLIP_IN_LLAVA = "model.vision_tower.vision_tower.vision_model."
TEXT_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
TEXT_OPTIONAL = ("num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "bos_token_id",
                 "eos_token_id")
PROJECTOR = "mlp2x_gelu"  # Linear-GELU-Linear, the only projector the model has


@dataclass
class ReleasedShapes:
    """A config whose sizes come from the downloads; ``origins`` names the file behind each
    part ("text", "clip", "sam", "heads", "lora"); ``files`` lists the files read for it."""

    config: MediSeeConfig
    origins: dict[str, str]
    files: list[Path] = field(default_factory=list)

    def origin(self, ours: str) -> str:
        """What gave the model the shape of our parameter ``ours``."""
        if ".lora_" in ours:
            return self.origins["lora"]
        if ours.startswith("mllm.mm_projector."):
            return f"{self.origins['text']} with {self.origins['clip']}"
        for prefix, part in (("mllm.vision_tower.", "clip"), ("mask_head.", "sam"), ("mllm.", "text")):
            if ours.startswith(prefix):
                return self.origins[part]
        return self.origins["heads"]


def read_shapes(base: MediSeeConfig, llava_med: Path, clip: Path | None, released: TensorFiles | None,
                medsam: TensorFiles | None, added_tokens: int) -> ReleasedShapes:
    """``base`` (a preset) with every size the downloads state. ``released``: the MediSee
    folder's tensors (its LoRA keys already without ``.base_layer``); ``medsam``: MedSAM's,
    when the model starts from it; ``added_tokens``: candidate tokens new to the tokenizer."""
    preset = f"the {base.name} preset"
    origins = {part: preset for part in ("text", "clip", "sam", "heads", "lora")}
    files: list[Path] = []
    llava_file = llava_med / CONFIG_FILE
    llava = _read_json(llava_file)
    text = _text_config(base.text, llava, added_tokens)
    files.append(llava_file)
    origins["text"] = str(llava_file)
    clip_config, origins["clip"] = _clip_config(base.clip, llava, llava_file, clip, released, files)
    sam_source = released if released is not None else medsam
    sam_config = base.sam
    if sam_source is not None:
        sam_config, origins["sam"] = _sam_config(base.sam, sam_source, SAM_IN_RELEASE if released is not None else "")
    config = dataclasses.replace(base, text=text, clip=clip_config, sam=sam_config)
    if released is not None:
        config, origins["heads"], origins["lora"] = _heads_and_lora(config, released)
    files += [llava_med / name for name in TOKENIZER_FILES if (llava_med / name).is_file()]
    return ReleasedShapes(config, origins, files)


def _read_json(file: Path) -> dict:
    if not file.is_file():
        raise WeightsError(f"{file}: not found (the downloaded folder's config.json says the model's sizes)")
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"{file}: cannot read it ({err})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{file}: expected a JSON object")
    return data


def _text_config(base: TextConfig, llava: dict, added_tokens: int) -> TextConfig:
    """The language model's sizes from LLaVA-Med's config.json; the vocabulary grows by the
    candidate tokens the tokenizer did not have (as the reference resizes it)."""
    missing = [key for key in TEXT_REQUIRED if key not in llava]
    if missing:
        raise WeightsError(f"LLaVA-Med config.json: no {missing[0]} (is it a LLaVA-Med folder?)")
    projector = llava.get("mm_projector_type", PROJECTOR)
    if projector != PROJECTOR:
        raise WeightsError(f"LLaVA-Med config.json: mm_projector_type {projector!r} is not supported (only {PROJECTOR})")
    values = {key: llava[key] for key in (*TEXT_REQUIRED, *TEXT_OPTIONAL) if llava.get(key) is not None}
    values.setdefault("num_key_value_heads", values["num_attention_heads"])
    values["vocab_size"] += added_tokens
    return dataclasses.replace(base, sliding_window=llava.get("sliding_window"), **values)


def _clip_config(base: ClipConfig, llava: dict, llava_file: Path, folder: Path | None,
                 released: TensorFiles | None, files: list[Path]) -> tuple[ClipConfig, str]:
    """CLIP's sizes from its config.json, else from the tower's tensors in the released
    folder, else the preset's; the feature layer from LLaVA-Med's config. LLaVA-Med's
    ``mm_hidden_size`` must be CLIP's width."""
    config = dataclasses.replace(base, feature_layer=llava.get("mm_vision_select_layer", base.feature_layer))
    origin = f"the preset (checked against {llava_file})"
    if folder is not None:
        file = folder / CONFIG_FILE
        data = _read_json(file)
        vision = CLIPVisionConfig(**data.get("vision_config", data))  # fills what a saved config left at its defaults
        config = dataclasses.replace(config, **{k: getattr(vision, k) for k in (
            "image_size", "patch_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")})
        files.append(file)
        origin = str(file)
    elif released is not None and RELEASED_PREFIX + "vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight" in released:
        config, origin = _clip_from_tensors(config, released, RELEASED_PREFIX + "vision_tower.vision_tower.vision_model.")
    width = llava.get("mm_hidden_size")
    if width is not None and width != config.hidden_size:
        raise WeightsError(f"{origin}: CLIP width {config.hidden_size} does not match mm_hidden_size {width} "
                           f"in {llava_file}")
    return config, origin


def _clip_from_tensors(base: ClipConfig, tensors: TensorFiles, prefix: str) -> tuple[ClipConfig, str]:
    patch = tensors.shape(prefix + "embeddings.patch_embedding.weight")  # (width, 3, p, p)
    positions = tensors.shape(prefix + "embeddings.position_embedding.weight")[0] - 1  # without CLS
    config = dataclasses.replace(
        base, hidden_size=patch[0], patch_size=patch[-1], image_size=round(positions ** 0.5) * patch[-1],
        num_hidden_layers=_count(tensors, re.escape(prefix) + r"encoder\.layers\.(\d+)\."),
        intermediate_size=tensors.shape(prefix + "encoder.layers.0.mlp.fc1.weight")[0],
    )
    return config, str(tensors.file_of(prefix + "embeddings.patch_embedding.weight"))


def _sam_config(base: SamConfig, tensors: TensorFiles, prefix: str) -> tuple[SamConfig, str]:
    """segment-anything's sizes from its tensors: width and patch from the patch embedding,
    the grid from the position embedding, heads from the relative positions' width, the
    global-attention blocks from the relative positions' length (a window's is shorter)."""
    encoder, decoder = prefix + "image_encoder.", prefix + "mask_decoder."
    try:
        grid, width = tensors.shape(encoder + "pos_embed")[1], tensors.shape(encoder + "pos_embed")[3]
        patch = tensors.shape(encoder + "patch_embed.proj.weight")[-1]
        layers = _count(tensors, re.escape(encoder) + r"blocks\.(\d+)\.")
        spans = [tensors.shape(f"{encoder}blocks.{i}.attn.rel_pos_h") for i in range(layers)]
        windows = {(length + 1) // 2 for length, _ in spans if length != 2 * grid - 1}
        config = dataclasses.replace(
            base, image_size=grid * patch, patch_size=patch, hidden_size=width, num_hidden_layers=layers,
            num_attention_heads=width // spans[0][1], window_size=windows.pop() if windows else base.window_size,
            global_attn_indexes=tuple(i for i, (length, _) in enumerate(spans) if length == 2 * grid - 1),
            prompt_dim=tensors.shape(encoder + "neck.0.weight")[0],
            decoder_layers=_count(tensors, re.escape(decoder) + r"transformer\.layers\.(\d+)\."),
            decoder_mlp_dim=tensors.shape(decoder + "transformer.layers.0.mlp.lin1.weight")[0],
            iou_head_hidden_dim=tensors.shape(decoder + "iou_prediction_head.layers.0.weight")[0],
        )
        return config, str(tensors.file_of(encoder + "pos_embed"))
    except (KeyError, IndexError) as err:
        raise WeightsError(f"{tensors.files[0].parent if len(tensors.files) > 1 else tensors.files[0]}: "
                           f"not a segment-anything checkpoint (no {err})") from None


def _heads_and_lora(config: MediSeeConfig, tensors: TensorFiles) -> tuple[MediSeeConfig, str, str]:
    """The routers' and box decoder's widths and LoRA's rank and targets from the released
    tensors (LoRA's alpha is not in them: the preset's)."""
    router = RELEASED_PREFIX + "router_seg.gate.0.weight"
    box = RELEASED_PREFIX + "bbox_decoder.layers.0.weight"
    for key in (router, box):
        if key not in tensors:
            raise WeightsError(f"{tensors.files[0].parent}: no {key} (is it the released MediSee folder?)")
    lora_a = [key for key in tensors if ".lora_A." in key]
    lora = config.lora
    if lora_a and lora is not None:
        targets = tuple(dict.fromkeys(re.search(r"\.(\w+)\.lora_A\.", key).group(1) for key in lora_a))
        lora = dataclasses.replace(lora, r=tensors.shape(lora_a[0])[0], target_modules=targets)
    elif not lora_a:
        lora = None
    config = dataclasses.replace(config, router_hidden=tensors.shape(router)[0], box_hidden=tensors.shape(box)[0],
                                 lora=lora)
    return config, str(tensors.file_of(router)), str(tensors.file_of(lora_a[0])) if lora_a else "no LoRA"


def _count(tensors: TensorFiles, pattern: str) -> int:
    """How many numbered blocks the keys matching ``pattern`` (one group: the number) have."""
    found = {int(m.group(1)) for key in tensors for m in [re.match(pattern, key)] if m}
    return max(found) + 1 if found else 0
