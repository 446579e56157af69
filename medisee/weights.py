"""Checkpoints: the project's own format, and the released artefacts in their own layouts.

Own format (a folder, loadable without the training code): ``config.json`` (MediSeeConfig),
``model.safetensors`` and ``tokenizer/``. Written to a temporary folder and renamed into
place, so a crash never leaves a half-written checkpoint.

Released layouts, all read from local paths (nothing is downloaded):
- MedSAM ``medsam_vit_b.pth``: segment-anything keys (``image_encoder.blocks.N...``).
- CLIP ViT-L/14-336, Hugging Face layout (``vision_model.*``; the text tower is ignored).
- LLaVA-Med v1.5 folder, original LLaVA layout (``model.layers.*``, ``model.mm_projector.*``,
  optionally ``model.vision_tower.vision_tower.vision_model.*``), safetensors or .bin shards.
- The released MediSee folder of ``*.bin`` files: the un-merged PEFT state dict with prefix
  ``base_model.model.``, LoRA as ``lora_A.default`` / ``lora_B.default``; the wrapped
  q_proj/v_proj weights without ``base_layer`` (older peft) or with it (newer peft; the
  authors' loader strips it, so both spellings circulate and both load),
  SAM under ``model.visual_model.*`` in segment-anything keys, heads under
  ``model.text_hidden_fcs.0.*``, ``model.bbox_decoder.layers.*``, ``model.router_*.gate.*``.

Each layout is one key function ``our parameter name -> their key`` (None when the layout
does not hold that parameter); loading and exporting both use it, and loading fails with
the name of the first missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import MediSeeConfig
from .model import MediSee
from .tensor_files import TensorFiles, WeightsError
from .tokenizer import load_tokenizer, sentencepiece_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
METADATA_FILE = "medisee.json"

KeyFn = Callable[[str], "str | None"]


# ---------------------------------------------------------------------------------------
# The project's own checkpoints
# ---------------------------------------------------------------------------------------
def save_checkpoint(bundle: MediSee, path: str | Path, metadata: dict | None = None) -> Path:
    """Write config, weights, tokenizer (and optional metadata) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the checkpoint from other users (a server)
    try:
        bundle.config.save(staging / CONFIG_FILE)
        save_file(_unique_state_dict(bundle.model), str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        os.chmod(staging / WEIGHTS_FILE, 0o644)
        bundle.tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
        model_file = sentencepiece_file(bundle.tokenizer)
        if model_file is not None:  # the reference's tokenisation reads it (``LegacyEncoder``)
            shutil.copy(model_file, staging / TOKENIZER_DIR / model_file.name)
        if metadata is not None:
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        _replace_dir(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> MediSee:
    """A MediSee from a folder written by ``save_checkpoint``."""
    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR):
        if not (path / name).exists():
            raise WeightsError(f"{path}: not a MediSee checkpoint folder (missing {name})")
    try:
        config = MediSeeConfig.load(path / CONFIG_FILE)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path / CONFIG_FILE}: invalid config: {err}") from None
    bundle = MediSee(config, load_tokenizer(path / TOKENIZER_DIR))
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises several types for damaged files
        raise WeightsError(f"{path / WEIGHTS_FILE}: cannot read weights ({err})") from None
    _load_exact(bundle.model, state, str(path / WEIGHTS_FILE))
    bundle.model.to(device=device, dtype=dtype).eval()
    return bundle


def extend_checkpoint(path: str | Path, changes: dict, seed: int = 0) -> MediSee:
    """A checkpoint with config ``changes`` that add modules (e.g. ``visual_prompts``):
    every weight the checkpoint has is kept, the added modules start from their seeded
    initialisation. Changes that would drop or reshape a trained weight are refused."""
    old = load_checkpoint(path)
    merged = _merge(old.config.to_dict(), changes)
    try:
        config = MediSeeConfig.from_dict(merged)
    except (ValueError, TypeError) as err:
        raise WeightsError(f"model changes {changes}: {err}") from None
    torch.manual_seed(seed)
    try:
        bundle = MediSee(config, old.tokenizer)
    except (ValueError, TypeError) as err:
        raise WeightsError(f"model changes {changes}: {err}") from None
    state = old.model.state_dict()
    expected = bundle.model.state_dict()
    dropped = [k for k in state if k not in expected]
    if dropped:
        raise WeightsError(f"model changes {changes} would drop trained weights ({dropped[0]}" + _more(dropped) + ")")
    reshaped = [k for k in state if state[k].shape != expected[k].shape]
    if reshaped:
        raise WeightsError(f"model changes {changes} would reshape trained weights ({reshaped[0]}" + _more(reshaped) + ")")
    bundle.model.load_state_dict(state, strict=False)
    bundle.model.eval()
    return bundle


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_metadata(path: str | Path) -> dict:
    file = Path(path) / METADATA_FILE
    return json.loads(file.read_text()) if file.exists() else {}


def _unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with tied tensors stored once (safetensors refuses shared storage)."""
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        ptr = (tensor.data_ptr(), tensor.shape)
        if ptr in seen:
            continue
        seen.add(ptr)
        out[name] = tensor.detach().contiguous()
    return out


def _load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    tied = {name for name in expected if name not in _unique_state_dict(model)}
    missing = [k for k in expected if k not in state and k not in tied]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise WeightsError(f"{source}: missing key {missing[0]}" + _more(missing))
    if unexpected:
        raise WeightsError(f"{source}: unexpected key {unexpected[0]}" + _more(unexpected))
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise WeightsError(
                f"{source}: key {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=False)


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap ``staging`` into ``target``; the old folder is removed only after the rename."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def _more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


# ---------------------------------------------------------------------------------------
# Key layouts
# ---------------------------------------------------------------------------------------
SAM_PREFIX = "mask_head.sam."
CLIP_PREFIX = "mllm.vision_tower."
LLM_PREFIX = "mllm.language_model."
PROJECTOR_PREFIX = "mllm.mm_projector."
HEAD_PREFIXES = ("text_hidden_fcs.", "bbox_decoder.", "router_seg.", "router_box.",
                 "prompt_encoder.", "input_aligner.",  # MIMO's modules, absent from MediSee's release
                 "patch_head.")  # ours, absent too

_SAM_RENAMES = [
    ("patch_embed.projection", "patch_embed.proj"),
    ("neck.conv1", "neck.0"), ("neck.layer_norm1", "neck.1"),
    ("neck.conv2", "neck.2"), ("neck.layer_norm2", "neck.3"),
    ("shared_embedding.positional_embedding", "pe_layer.positional_encoding_gaussian_matrix"),
    ("prompt_encoder.point_embed.", "prompt_encoder.point_embeddings."),
    ("mask_embed.conv1", "mask_downscaling.0"), ("mask_embed.layer_norm1", "mask_downscaling.1"),
    ("mask_embed.conv2", "mask_downscaling.3"), ("mask_embed.layer_norm2", "mask_downscaling.4"),
    ("mask_embed.conv3", "mask_downscaling.6"),
    ("upscale_conv1", "output_upscaling.0"), ("upscale_layer_norm", "output_upscaling.1"),
    ("upscale_conv2", "output_upscaling.3"),
    ("layer_norm_final_attn", "norm_final_attn"),
]


def sam_key(ours: str) -> str | None:
    """Our ``mask_head.sam.*`` name -> the segment-anything (MedSAM .pth) key."""
    if not ours.startswith(SAM_PREFIX):
        return None
    key = ours[len(SAM_PREFIX):]
    if key.startswith("shared_image_embedding."):  # tied to the prompt encoder's copy
        return "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    if key.startswith("vision_encoder."):
        key = "image_encoder." + key[len("vision_encoder."):].replace("layers.", "blocks.", 1)
    for new, old in _SAM_RENAMES:
        key = key.replace(new, old)
    key = re.sub(r"\.layer_norm(\d)\.", r".norm\1.", key)
    # SamFeedForward (proj_in, layers.0, proj_out) <- segment-anything MLP (layers.0, 1, 2)
    match = re.match(r"(.*(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(proj_in|layers\.(\d+)|proj_out)\.(.*)", key)
    if match:
        head, part, index, rest = match.groups()
        if part == "proj_in":
            number = 0
        elif part == "proj_out":
            number = None
        else:
            number = int(index) + 1
        if number is None:
            return f"{head}.layers.{{last}}.{rest}"
        key = f"{head}.layers.{number}.{rest}"
    return key


def clip_key(ours: str) -> str | None:
    """Our ``mllm.vision_tower.*`` name -> the Hugging Face CLIP checkpoint key."""
    return "vision_model." + ours[len(CLIP_PREFIX):] if ours.startswith(CLIP_PREFIX) else None


def _llm_key(ours: str, keep_lora: bool) -> str | None:
    """Our language-model name -> the original LLaVA key (``model.*`` / ``lm_head.*``)."""
    if not ours.startswith(LLM_PREFIX):
        return None
    key = ours[len(LLM_PREFIX):]
    if ".lora_" in key and not keep_lora:
        return None
    return key.replace(".base_layer.", ".")


def llava_key(ours: str) -> str | None:
    """Our name -> the LLaVA-Med v1.5 (original LLaVA layout) key; heads/SAM/LoRA are not there."""
    if ours.startswith(CLIP_PREFIX):
        return "model.vision_tower.vision_tower." + clip_key(ours)
    if ours.startswith(PROJECTOR_PREFIX):
        return "model.mm_projector." + ours[len(PROJECTOR_PREFIX):]
    return _llm_key(ours, keep_lora=False)


def released_key(ours: str) -> str | None:
    """Our name -> the released MediSee (un-merged PEFT) key."""
    prefix = "base_model.model."
    if ours.startswith(SAM_PREFIX):
        return prefix + "model.visual_model." + sam_key(ours)
    if ours.startswith("text_hidden_fcs."):
        return prefix + "model.text_hidden_fcs.0." + ours[len("text_hidden_fcs."):]
    if ours.startswith(HEAD_PREFIXES):
        return prefix + "model." + ours
    key = _llm_key(ours, keep_lora=True)
    if key is not None:
        return prefix + key
    return prefix + llava_key(ours)


def _resolve(key_fn: KeyFn, ours: str, model: torch.nn.Module) -> str | None:
    key = key_fn(ours)
    if key is not None and "{last}" in key:  # SamFeedForward's proj_out is the MLP's last layer
        module_path = ours.rsplit(".proj_out.", 1)[0][len(SAM_PREFIX):]
        depth = model.mask_head.sam.get_submodule(module_path).num_layers
        key = key.replace("{last}", str(depth - 1))
    return key


def layout_mapping(model: torch.nn.Module, key_fn: KeyFn) -> dict[str, str]:
    """Our parameter/buffer name -> source key, for every entry the layout holds."""
    mapping = {}
    for name in model.state_dict():
        key = _resolve(key_fn, name, model)
        if key is not None:
            mapping[name] = key
    return mapping


# ---------------------------------------------------------------------------------------
# Loading and exporting released layouts
# ---------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What a load did: which of our tensors it filled, which source keys it skipped on
    purpose, and which vocabulary matrices it grew (new token rows = mean of the rest)."""

    source: str
    filled: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every weight file read


def _ignored_by_default(key: str) -> bool:
    return key.endswith(("rotary_emb.inv_freq", "position_ids")) or key in ("pixel_mean", "pixel_std")


def load_layout(
    model: torch.nn.Module,
    source: TensorFiles,
    key_fn: KeyFn,
    source_name: str,
    ignore: Callable[[str], bool] = lambda key: False,
    grow_vocabulary: bool = False,
    required: Callable[[str], bool] = lambda ours: True,
    origin: Callable[[str], str] | None = None,
    check_only: bool = False,
) -> LoadReport:
    """Copy ``source`` into ``model`` through ``key_fn``.

    Every mapped tensor must be present (unless ``required`` says otherwise), every source
    key must be used or explicitly ignored, and shapes must match; the vocabulary matrices
    may grow when ``grow_vocabulary`` (LLaVA-Med has 32000 rows, MediSee adds tokens).
    ``origin(ours)`` names what gave the model that tensor's shape (a config file), for
    the error; ``check_only`` checks names and shapes without reading a tensor."""
    mapping = {k: v for k, v in layout_mapping(model, key_fn).items() if v in source or required(k)}
    missing = [f"{src} (for {ours})" for ours, src in mapping.items() if src not in source]
    if missing:
        raise WeightsError(f"{source_name}: missing key {missing[0]}" + _more(missing))
    used = set(mapping.values())
    skipped = [k for k in source if k not in used and (ignore(k) or _ignored_by_default(k))]
    unexpected = [k for k in source if k not in used and k not in skipped]
    if unexpected:
        raise WeightsError(f"{source.file_of(unexpected[0])}: unexpected key {unexpected[0]}" + _more(unexpected))
    report = LoadReport(source=source_name, ignored=skipped, files=[str(f) for f in source.files])
    state = model.state_dict()
    for ours, src in mapping.items():
        have, want = source.shape(src), tuple(state[ours].shape)
        if have != want:
            vocab_matrix = ours.endswith(("embed_tokens.weight", "lm_head.weight"))
            if not (grow_vocabulary and vocab_matrix and have[1:] == want[1:] and have[0] < want[0]):
                expects = f"{origin(ours)} gives the model" if origin is not None else "the model expects"
                raise WeightsError(f"{source.file_of(src)}: key {src} has shape {have}, {expects} {want} for {ours}")
            report.resized.append(ours)
        report.filled.append(ours)
    if not check_only:
        _copy(state, source, mapping, report.resized)
    return report


def _copy(state: dict[str, torch.Tensor], source: TensorFiles, mapping: dict[str, str], grown: list[str]) -> None:
    """Each source tensor into its target; a grown vocabulary matrix's new rows are the
    mean of the others."""
    with torch.no_grad():
        for ours, src in mapping.items():
            target, value = state[ours], source[src]
            if ours in grown:
                extra = value.mean(dim=0, keepdim=True).expand(target.shape[0] - value.shape[0], -1)
                value = torch.cat([value, extra])
            target.copy_(value.to(target.dtype))


def export_layout(model: torch.nn.Module, key_fn: KeyFn) -> dict[str, torch.Tensor]:
    """Our tensors renamed into a layout (tied duplicates written once)."""
    state = model.state_dict()
    out = {}
    for ours, key in layout_mapping(model, key_fn).items():
        out.setdefault(key, state[ours].detach().clone().contiguous())
    return out


def read_state_dict(path: str | Path) -> TensorFiles:
    """Every tensor of a ``.pth``/``.bin``/``.safetensors`` file or of every shard in a folder
    (names and shapes now, each tensor when it is used)."""
    return TensorFiles(path)


def write_state_dict(state: dict[str, torch.Tensor], folder: str | Path, stem: str, shards: int = 1,
                     safetensors: bool = False) -> list[Path]:
    """Write ``state`` as ``shards`` files with an index, as Hugging Face sharded checkpoints are."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    size = -(-len(keys) // shards)
    suffix = "safetensors" if safetensors else "bin"
    files, weight_map = [], {}
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.{suffix}" if shards > 1 else f"{stem}.{suffix}"
        chunk = {k: state[k] for k in keys[i * size : (i + 1) * size]}
        if safetensors:
            save_file(chunk, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(chunk, folder / name)
        weight_map.update({k: name for k in chunk})
        files.append(folder / name)
    if shards > 1:
        index = folder / f"{stem}.{suffix}.index.json"
        index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    return files


def _is_clip_text(key: str) -> bool:
    return key.startswith(("text_model.", "text_projection", "visual_projection", "logit_scale"))


Origin = Callable[[str], str] | None


def load_medsam(bundle: MediSee, path: str | Path, origin: Origin = None, check_only: bool = False) -> LoadReport:
    """MedSAM/SAM ViT-B weights from a segment-anything ``.pth``."""
    return load_layout(bundle.model, read_state_dict(path), sam_key, str(path), origin=origin, check_only=check_only)


def load_clip(bundle: MediSee, path: str | Path, origin: Origin = None, check_only: bool = False) -> LoadReport:
    """CLIP vision weights from a Hugging Face CLIP folder or file (text tower ignored)."""
    return load_layout(bundle.model, read_state_dict(path), clip_key, str(path), ignore=_is_clip_text,
                       origin=origin, check_only=check_only)


def load_llava_med(bundle: MediSee, path: str | Path, with_vision_tower: bool | None = None, origin: Origin = None,
                   check_only: bool = False) -> LoadReport:
    """LLaVA-Med v1.5 language model and projector (and the CLIP tower if the folder has it)."""
    state = read_state_dict(path)
    if with_vision_tower is None:
        with_vision_tower = any(k.startswith("model.vision_tower.") for k in state)
    return load_layout(
        bundle.model, state, llava_key, str(path), grow_vocabulary=True,
        required=lambda ours: with_vision_tower or not ours.startswith(CLIP_PREFIX), origin=origin,
        check_only=check_only,
    )


def released_tensors(path: str | Path) -> TensorFiles:
    """The released MediSee folder's tensors, LoRA-wrapped weights without ``.base_layer``
    whichever peft wrote them (as the authors' loader reads them)."""
    return read_state_dict(path).renamed(lambda key: key.replace(".base_layer.", "."))


def load_released_medisee(bundle: MediSee, path: str | Path, origin: Origin = None,
                          check_only: bool = False) -> LoadReport:
    """The released MediSee checkpoint folder (every tensor of the model)."""
    return load_layout(bundle.model, released_tensors(path), released_key, str(path), origin=origin,
                       check_only=check_only)
